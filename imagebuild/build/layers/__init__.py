"""One builder per recipe section (os, runtime, libraries, server, app, config); their cache is ../cache.py."""
