"""What a build reads from outside: git facts, the app's Debian index and root file systems, the lock file."""
