"""The field image's boot-partition configuration: ``eschaton.toml`` on the FAT partition, read
at every boot, checked with file, line and key, and turned into the node's ``node.toml``, the
hostname, the batman-adv mesh (systemd-networkd, wpa_supplicant) and SSH's authorized keys
(docs/image.md, "Configuring a node from the boot partition").

``bootconf`` parses and validates; ``toml_out`` writes TOML back; ``render`` turns a checked
configuration into files; ``apply`` writes them at boot, keeping the last good configuration
when the file is bad; ``firstboot`` grows the root and makes the node's key once; ``meshaddr``
derives the mesh address from the node id."""
