"""The development and test SMTP server: aiosmtpd, writing every message
it receives as one `.eml` file into a directory, where a developer or a
test reads it (Lectern's notification tests follow the links in them).

    python server.py --host 127.0.0.1 --port 2525 --maildir .lectern/smtp/mail

Each file starts with `X-Envelope-From:` and one `X-Envelope-To:` line per
recipient (what the SMTP envelope said), then the message as received. A
file is written under a temporary name and renamed, so a reader never sees
half a message. No TLS and no authentication: it listens on loopback only.
"""

import argparse
import asyncio
import os
import signal
import time
import uuid

from aiosmtpd.controller import Controller


class Maildir:
    def __init__(self, directory):
        self.directory = directory
        os.makedirs(directory, exist_ok=True)

    async def handle_DATA(self, server, session, envelope):
        head = [f"X-Envelope-From: {envelope.mail_from}"]
        head += [f"X-Envelope-To: {rcpt}" for rcpt in envelope.rcpt_tos]
        data = envelope.original_content or envelope.content
        if isinstance(data, str):
            data = data.encode("utf-8")
        name = f"{time.time_ns()}-{uuid.uuid4().hex}"
        tmp = os.path.join(self.directory, f".{name}.tmp")
        with open(tmp, "wb") as f:
            f.write(("\r\n".join(head) + "\r\n").encode("utf-8"))
            f.write(data)
        os.rename(tmp, os.path.join(self.directory, f"{name}.eml"))
        return "250 Message accepted for delivery"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=2525)
    parser.add_argument("--maildir", required=True)
    args = parser.parse_args()
    controller = Controller(
        Maildir(args.maildir),
        hostname=args.host,
        port=args.port,
        # UTF-8 subjects and bodies (SMTPUTF8) and large messages are fine.
        enable_SMTPUTF8=True,
        data_size_limit=10 * 1024 * 1024,
    )
    controller.start()
    print(f"smtp: listening on {args.host}:{args.port}, writing to {args.maildir}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.new_event_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.run_until_complete(stop.wait())
    controller.stop()


if __name__ == "__main__":
    main()
