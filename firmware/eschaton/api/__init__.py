"""Local control API: one command registry for the CLI and HTTP JSON on a unix socket."""
