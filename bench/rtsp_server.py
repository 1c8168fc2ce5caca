#!/usr/bin/env python3
"""A real RTSP server for the live tests and benchmarks: GStreamer's gst-rtsp-server through python3-gi.

Run it with the system Python, which has ``gi`` (the project's virtual environment does not):

  /usr/bin/python3 rtsp_server.py --file clip.mp4 --port 8554    # an H.264 MP4, paced at real time

The stream is at rtsp://127.0.0.1:<port>/test (``--address`` binds to another loopback address, ``--user
NAME:PASSWORD`` requires digest authentication). It prints one "RTSP ready" line once bound and one
"client connected" line per RTSP connection, and stops on SIGTERM or SIGINT. Debian packages: python3-gi
gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
gstreamer1.0-plugins-ugly gstreamer1.0-libav. Adapted from the team's shared tools, kept here so the
tests need nothing outside the project.
"""

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
gi.require_version("GstRtsp", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", default="8554")
    ap.add_argument("--mount", default="/test")
    ap.add_argument("--file", required=True, help="an H.264 MP4")
    ap.add_argument("--address", default="127.0.0.1")
    ap.add_argument("--user", default="", help="NAME:PASSWORD: require digest authentication")
    a = ap.parse_args()

    Gst.init(None)
    launch = (
        f"( filesrc location={a.file} ! qtdemux ! h264parse config-interval=-1 "
        f"! rtph264pay name=pay0 pt=96 config-interval=-1 )"
    )
    server = GstRtspServer.RTSPServer()
    server.set_address(a.address)
    server.set_service(str(a.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch)
    factory.set_shared(True)  # one pipeline for all clients, like a camera
    if a.user:
        name, _, password = a.user.partition(":")
        auth = GstRtspServer.RTSPAuth()
        auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", "user")
        auth.add_digest(name, password, token)
        server.set_auth(auth)
        role = "user, media.factory.access=(boolean)true, media.factory.construct=(boolean)true"
        factory.add_role_from_structure(Gst.Structure.new_from_string(role))
    server.connect("client-connected", lambda *_: print("client connected", flush=True))
    server.get_mount_points().add_factory(a.mount, factory)
    if server.attach(None) == 0:
        print("could not bind", a.port, file=sys.stderr, flush=True)
        sys.exit(1)
    print(f"RTSP ready rtsp://{a.address}:{a.port}{a.mount}", flush=True)
    loop = GLib.MainLoop()
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, loop.quit)
    loop.run()


if __name__ == "__main__":
    main()
