"""After the bake: promotion by digest, `imagebuild run`, deploy over SSH (deploy/), VM disks (disk/)."""
