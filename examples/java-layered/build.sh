#!/bin/sh
# Stands in for `mvn package dependency:copy-dependencies` (or Gradle's build and a copy task):
# writes the build output the recipe points at, reproducibly (fixed jar dates, no timestamps).
#   target/dependency/   the dependency jars (greeting-1.0.jar, banner-0.1-SNAPSHOT.jar)
#   target/classes/      the app's classes, with its resources copied in (as Maven does)
#   target/app-boot.jar  the same app as a Spring Boot style fat jar (BOOT-INF/lib, BOOT-INF/classes)
set -eu
cd "$(dirname "$0")"
date=2000-01-01T00:00:00Z
rm -rf target
mkdir -p target/dependency target/classes target/deps target/boot/BOOT-INF/lib target/boot/BOOT-INF/classes
javac --release 17 -d target/deps/greeting deps/greeting/greeting/Greeting.java
jar --create --file target/dependency/greeting-1.0.jar --date=$date -C target/deps/greeting .
javac --release 17 -d target/deps/banner deps/banner/banner/Banner.java
jar --create --file target/dependency/banner-0.1-SNAPSHOT.jar --date=$date -C target/deps/banner .
javac --release 17 -cp 'target/dependency/*' -d target/classes src/main/java/hello/Hello.java
cp -R src/main/resources/. target/classes/
cp target/dependency/*.jar target/boot/BOOT-INF/lib/
cp -R target/classes/. target/boot/BOOT-INF/classes/
printf 'Start-Class: hello.Hello\n' > target/manifest.txt
jar --create --file target/app-boot.jar --date=$date --manifest target/manifest.txt -C target/boot .
rm -rf target/deps target/boot target/manifest.txt
