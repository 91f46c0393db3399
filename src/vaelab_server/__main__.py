"""`python -m vaelab_server start|stop` (`make server`, `make server-stop`): see `cli`."""

from vaelab_server.cli import main

main()
