# The OS and Python runtime that `imagebuild bake` builds from Debian packages
# (its os and runtime layers, flattened into one rootfs.tar), as a Docker base
# image. bench/bake.py makes rootfs.tar and builds this, so that `docker build`
# starts from exactly the bytes imagebuild starts from:
#
#   docker build -f bench/base.Dockerfile -t flask-bench-base DIR_HOLDING_ROOTFS_TAR
FROM scratch
ADD rootfs.tar /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
CMD ["bash"]
