#!/bin/sh
# Builds app.jar from Hello.java, reproducibly: the same source gives the same
# jar bytes (fixed entry dates, no build timestamps).
set -eu
cd "$(dirname "$0")"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
javac --release 17 -d "$out/classes" Hello.java
jar --create --file app.jar.tmp --date=2000-01-01T00:00:00Z --main-class Hello -C "$out/classes" .
mv app.jar.tmp app.jar
