"""What a build reads from outside: git facts, the app's files in git, the Debian index and root file systems, the lock file."""
