"""seeder: publishing models (manifest + torrent), the origin server and the edge cache.

Imports only ``shoal``; talks to the coordinator and peers over the wire.
"""
