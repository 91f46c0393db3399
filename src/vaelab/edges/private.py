"""What vaelab writes is its owner's only: the modes, in one place.

A store holds a team's work and sometimes what it should not (a path, a user name, a config);
Hydra's outputs hold each run's config and log. Whatever the umask, the files are 0600 and the
folders 0700: the run store's (`store_files.make_private`), the team server's (`server`),
and everything a pipeline or `make ui` creates (they run under `PRIVATE_UMASK`).
"""

PRIVATE_DIR, PRIVATE_FILE = 0o700, 0o600
PRIVATE_UMASK = 0o077
