// Uploads one file to a tus server with tus-js-client, as a partner's Node
// integration would. Driven by ingest/tests/tus_clients.rs.
//
// Usage: node tus-js-upload.mjs '<json options>'
//   endpoint, file, token        where, what, and the partner API key
//   uploadUrl                    resume this upload instead of creating one
//   chunkSize                    bytes per PATCH (default: the whole file)
//   paceMs                       pause before every request, to slow the upload
//   dieAfter                     SIGKILL this process once this many bytes are sent
// Prints one JSON line per event: {"event":"url"|"done", "url", "offset"?}.
import fs from 'node:fs';
import * as tus from 'tus-js-client';

const opts = JSON.parse(process.argv[2]);
const size = fs.statSync(opts.file).size;
const say = (event) => process.stdout.write(JSON.stringify(event) + '\n');
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const upload = new tus.Upload(fs.createReadStream(opts.file), {
  endpoint: opts.endpoint,
  uploadUrl: opts.uploadUrl ?? null,
  uploadSize: size,
  chunkSize: opts.chunkSize ?? Infinity,
  headers: { Authorization: `Bearer ${opts.token}` },
  metadata: { filename: 'lecture.mp4', title: 'Recorded lecture' },
  // Enough patience to ride out a server restart.
  retryDelays: [0, 200, 500, 1000, 2000, 3000, 5000, 5000, 5000],
  storeFingerprintForResuming: false,
  onBeforeRequest: async () => {
    if (opts.paceMs) await sleep(opts.paceMs);
  },
  onUploadUrlAvailable: () => say({ event: 'url', url: upload.url }),
  onProgress: (sent) => {
    if (opts.dieAfter != null && sent >= opts.dieAfter) {
      // No goodbye: the server sees the connection drop mid-chunk.
      process.kill(process.pid, 'SIGKILL');
    }
  },
  onSuccess: () => say({ event: 'done', url: upload.url }),
  onError: (error) => {
    process.stderr.write(`tus-js-client failed: ${error}\n`);
    process.exit(1);
  },
});
upload.start();
