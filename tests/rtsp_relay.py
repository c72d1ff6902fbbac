"""A small local RTSP relay on GStreamer's RTSP server, for tests and benchmarks (not part of the package).

For each stream name N it serves a RECORD mount ``rtsp://127.0.0.1:PORT/publish/N`` (a camera or the filter pushes
H.264 there, e.g. FFmpeg/PyAV's RTSP muxer) and a PLAY mount ``rtsp://127.0.0.1:PORT/N`` that relays what was pushed
to any number of readers. Video only. It needs Debian's GStreamer RTSP server and its introspection data
(``apt-get install gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good gstreamer1.0-plugins-bad``) and runs under the
system Python where ``gi`` imports: ``/usr/bin/python3 tests/rtsp_relay.py --port 8554 cam out``.
Prints ``ready PORT`` on stdout once it listens; stops on SIGTERM/SIGINT.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

CAPS = "video/x-h264,stream-format=byte-stream,alignment=au"
RECORD = ("( rtph264depay name=depay0 ! h264parse config-interval=-1 ! " + CAPS +
          " ! appsink name=sink emit-signals=true sync=false max-buffers=64 drop=true )")
# PLAY: h264parse (which knows access units) puts SPS/PPS ahead of every IDR frame; rtph264pay's own insertion
# (config-interval) would put them between the slices of a multi-slice IDR frame, and decoders then drop the
# picture's first slice (x264 zerolatency, like many cameras, writes several slices per frame)
PLAY = ("( appsrc name=src is-live=true format=time do-timestamp=true caps=" + CAPS +
        " ! h264parse config-interval=-1 ! rtph264pay name=pay0 pt=96 config-interval=0 )")


def log(msg: str) -> None:
    print(f"relay: {msg}", file=sys.stderr, flush=True)


class Relay:
    """What the RECORD mount of one stream receives goes to every live appsrc of its PLAY mount."""

    def __init__(self, name: str):
        self.name = name
        self.lock = threading.Lock()
        self.sources: list = []
        self.publishing = False

    def on_record(self, _factory, media) -> None:
        log(f"{self.name}: publisher")
        self.publishing = True
        sink = media.get_element().get_by_name("sink")
        sink.connect("new-sample", self.on_sample)
        media.connect("unprepared", self.on_publisher_gone)

    def on_publisher_gone(self, _media) -> None:
        """The publisher left: end the readers' streams (they see the end and may reconnect)."""
        log(f"{self.name}: publisher gone")
        self.publishing = False
        with self.lock:
            sources, self.sources = list(self.sources), []
        for src in sources:
            src.emit("end-of-stream")

    def on_play(self, _factory, media) -> None:
        log(f"{self.name}: reader")
        src = media.get_element().get_by_name("src")
        with self.lock:
            self.sources.append(src)
        media.connect("unprepared", lambda _m: self._drop(src))

    def _drop(self, src) -> None:
        with self.lock:
            if src in self.sources:
                self.sources.remove(src)

    def on_sample(self, sink):
        sample = sink.emit("pull-sample")
        buf = sample.get_buffer()
        with self.lock:
            sources = list(self.sources)
        for src in sources:
            out = buf.copy_deep()  # the reader's pipeline stamps its own running time (do-timestamp)
            out.pts = out.dts = Gst.CLOCK_TIME_NONE
            out.duration = Gst.CLOCK_TIME_NONE
            src.emit("push-buffer", out)
        return Gst.FlowReturn.OK


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=8554)
    ap.add_argument("--address", default="127.0.0.1")
    ap.add_argument("streams", nargs="+", help="stream names")
    args = ap.parse_args()
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address(args.address)
    server.set_service(str(args.port))
    # the default pool has one thread: a TCP publisher and a reader then deadlock each other
    server.get_thread_pool().set_max_threads(16)
    mounts = server.get_mount_points()
    relays = []
    for name in args.streams:
        relay = Relay(name)
        relays.append(relay)
        rec = GstRtspServer.RTSPMediaFactory()
        rec.set_transport_mode(GstRtspServer.RTSPTransportMode.RECORD)
        rec.set_launch(RECORD)
        rec.set_latency(0)
        rec.connect("media-configure", relay.on_record)
        mounts.add_factory(f"/publish/{name}", rec)
        play = GstRtspServer.RTSPMediaFactory()
        play.set_launch(PLAY)
        play.set_shared(False)  # one pipeline per reader: a reader that came too early cannot wedge the next
        play.connect("media-configure", relay.on_play)
        mounts.add_factory(f"/{name}", play)
    by_path = {f"/{r.name}": r for r in relays}

    def on_describe(_client, ctx):
        """Readers get 404 while nobody publishes (like other relays), instead of a pipeline waiting for data."""
        relay = by_path.get(ctx.uri.abspath.rstrip("/"))
        if relay is not None and not relay.publishing:
            return GstRtsp.RTSPStatusCode.NOT_FOUND
        return GstRtsp.RTSPStatusCode.OK

    server.connect("client-connected", lambda _s, client: client.connect("pre-describe-request", on_describe))
    if server.attach(None) == 0:
        print(f"cannot listen on {args.address}:{args.port}", file=sys.stderr)
        return 1
    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print(f"ready {server.get_bound_port()}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
