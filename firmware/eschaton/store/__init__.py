"""Where the node keeps its files: private modes (``private``) and the one SQLite opener
(``sqlite.open_db``: pragmas, private files, schema versions and migrations).

Every file the node creates in its datadir is 0600 and every directory 0700: the datadir holds
keys, channel states and the chain, and no other local user has any business reading them.
Every SQLite database of the firmware opens through ``sqlite``; no other module imports
``sqlite3``.
"""
