"""What the tests and the benchmarks both stand on, so that bench/ never imports tests/.

Real parts around a CAP server: a local HTTP server for images
(`http_server`) and the images themselves (`image_files`), a WebSocket
client (`client`), the tiny SAM (`tiny_sam`, and `tiny_model_site`, which
swaps it into a `python -m server` process), real server processes that are
always stopped (`processes`, `replicas`), the Cosmos DB emulator
(`cosmos_emulator`), free ports, waiting on a condition, and the process's
memory (`memory`). tests/ and bench/ import from here; nothing here imports
either.
"""
