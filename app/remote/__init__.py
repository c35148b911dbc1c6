"""The second backend: metadata in PostgreSQL, files in S3-compatible object storage.

:mod:`app.remote.pg` holds the database's stamp, the live replicas and maintenance's
exclusive hold; :mod:`app.remote.objects` the object store; :mod:`app.remote.errors` their
refusals. Importing this package imports neither psycopg nor boto3.
"""
