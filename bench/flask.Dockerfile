# examples/flask-hello the conventional Docker way: the same libraries, server
# and app that `imagebuild bake` puts in its image, on the same OS (bench/base.Dockerfile).
# Ordered from what changes least to what changes most, so an app commit
# rebuilds only the last COPY.
#
# The build context is assembled by bench/bake.py:
#   deps/site-packages/    requirements.txt plus the server's pinned packages,
#                          installed on the host by pip with the flags imagebuild
#                          uses (--target, --platform, --only-binary=:all:,
#                          --require-hashes); the image has no pip of its own
#   deps/gunicorn.conf.py  the gunicorn config imagebuild renders from the recipe
#   app/                   `git archive` of the commit
ARG BASE=flask-bench-base
FROM ${BASE}
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PORT=8000
COPY deps/site-packages/ /usr/local/lib/python3.11/dist-packages/
COPY deps/gunicorn.conf.py /etc/gunicorn/gunicorn.conf.py
COPY app/ /app/
WORKDIR /app
USER 10001:10001
EXPOSE 8000
CMD ["python3.11", "-m", "gunicorn", "-c", "/etc/gunicorn/gunicorn.conf.py", "hello:app"]
