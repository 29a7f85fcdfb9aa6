"""Uploads one file to a tus server with tuspy, as a partner's Python
integration would. Driven by ingest/tests/tus_clients.rs.

Usage: python tuspy-upload.py '<json options>'
  endpoint, file, token   where, what, and the partner API key
  uploadUrl               resume this upload instead of creating one
  chunkSize               bytes per PATCH (tuspy reads each chunk into memory)
  dieAfter                SIGKILL this process once this many bytes are stored
  checksum                send Upload-Checksum (tuspy uses sha1)
Prints one JSON line per event: {"event": "url"|"done", "url", "offset"}.
"""
import json
import os
import signal
import sys

from tusclient import client

opts = json.loads(sys.argv[1])
say = lambda event: print(json.dumps(event), flush=True)

tus = client.TusClient(opts["endpoint"], headers={"Authorization": "Bearer " + opts["token"]})
uploader = tus.uploader(
    opts["file"],
    url=opts.get("uploadUrl"),
    chunk_size=opts.get("chunkSize", 4 * 1024 * 1024),
    metadata={"filename": "lecture.mov", "title": "Recorded lecture"},
    upload_checksum=bool(opts.get("checksum")),
    retries=10,
    retry_delay=1,
)
announced = False
while uploader.offset < uploader.get_file_size():
    uploader.upload_chunk()
    if not announced:
        say({"event": "url", "url": uploader.url, "offset": uploader.offset})
        announced = True
    die_after = opts.get("dieAfter")
    if die_after is not None and uploader.offset >= die_after:
        os.kill(os.getpid(), signal.SIGKILL)
say({"event": "done", "url": uploader.url, "offset": uploader.offset})
