"""The command line and the servers: what a user runs, outside the library."""
