"""Where the node keeps its files: private modes (``private``) and the SQLite opener (``sqlite``).

Every file the node creates in its datadir is 0600 and every directory 0700: the datadir holds
keys, channel states and the chain, and no other local user has any business reading them.
"""
