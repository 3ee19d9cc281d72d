"""A local RTSP server for tests: GStreamer's gst-rtsp-server serving MP4 files on 127.0.0.1.

Run by Debian's system interpreter (``/usr/bin/python3``), which has PyGObject (``gi``); the
project's virtual environment does not. Usage::

    /usr/bin/python3 tests/support/rtsp_server.py --port 0 --mount /cam1=/abs/a.mp4 [--loop]

The first line written to stdout is the bound TCP port. The server runs until SIGTERM or SIGINT.
SIGUSR1 disconnects every client while the server keeps running (a "network drop"). The process
also asks the kernel to send it SIGTERM when the thread that started it dies (PR_SET_PDEATHSIG),
so a crashed test run leaves no server behind: start it from a thread that outlives it.

Each mount streams the file's H.264 track at real time, without re-encoding
(``qtdemux ! rtph264pay``). With ``--loop`` it restarts seamlessly at the end (segment seeks keep
the running time, so RTP timestamps keep increasing); without it the stream ends at end of file.
"""

from __future__ import annotations

import argparse
import ctypes
import signal
import sys
from typing import Any

import gi  # type: ignore[import-not-found]

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # type: ignore[import-not-found]  # noqa: E402

_PR_SET_PDEATHSIG = 1


def _looping_media_type() -> Any:
    """A media class that seeks back to the start at each segment end instead of ending.

    Defined after ``Gst.init``: registering the GType earlier leaves the ``handle-message``
    signal's argument type invalid.
    """

    class LoopingMedia(GstRtspServer.RTSPMedia):  # type: ignore[misc]
        def do_handle_message(self, message: Any) -> bool:
            if message.type == Gst.MessageType.SEGMENT_DONE:
                self.get_element().seek(
                    1.0,
                    Gst.Format.TIME,
                    Gst.SeekFlags.SEGMENT,
                    Gst.SeekType.SET,
                    0,
                    Gst.SeekType.NONE,
                    -1,
                )
                return True
            return bool(GstRtspServer.RTSPMedia.do_handle_message(self, message))

    return LoopingMedia


def _start_segment_playback(media: Any) -> None:
    media.get_element().seek(
        1.0,
        Gst.Format.TIME,
        Gst.SeekFlags.FLUSH | Gst.SeekFlags.SEGMENT,
        Gst.SeekType.SET,
        0,
        Gst.SeekType.NONE,
        -1,
    )


def _on_media_configure(_factory: Any, media: Any) -> None:
    media.connect("prepared", _start_segment_playback)


def _factory(path: str, *, looping_media: Any) -> Any:
    factory = GstRtspServer.RTSPMediaFactory()
    location = path.replace("\\", "\\\\").replace('"', '\\"')
    factory.set_launch(
        f'( filesrc location="{location}" ! qtdemux ! rtph264pay '
        "name=pay0 pt=96 config-interval=1 )"
    )
    factory.set_shared(True)
    if looping_media is not None:
        factory.set_media_gtype(looping_media)
        factory.connect("media-configure", _on_media_configure)
    return factory


def _parse_mount(text: str) -> tuple[str, str]:
    mount, sep, path = text.partition("=")
    if not sep or not mount.startswith("/") or not path.startswith("/"):
        raise argparse.ArgumentTypeError(f"expected /mount=/absolute/file.mp4, got {text!r}")
    return mount, path


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # best effort: the fixture still stops the server by its pid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="TCP port; 0 = any free port")
    parser.add_argument(
        "--mount",
        type=_parse_mount,
        action="append",
        required=True,
        help="/mount=/absolute/file.mp4 (repeatable)",
    )
    parser.add_argument("--loop", action="store_true", help="loop every file seamlessly")
    args = parser.parse_args(argv)

    _die_with_parent()
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    mounts = server.get_mount_points()
    looping_media = _looping_media_type() if args.loop else None
    for mount, path in args.mount:
        mounts.add_factory(mount, _factory(path, looping_media=looping_media))

    loop = GLib.MainLoop()
    if server.attach(None) == 0:
        print(f"cannot bind 127.0.0.1:{args.port}", file=sys.stderr, flush=True)
        return 1

    def remove_client(_server: Any, _client: Any) -> Any:
        return GstRtspServer.RTSPFilterResult.REMOVE

    def drop_clients() -> bool:
        server.client_filter(remove_client)
        return GLib.SOURCE_CONTINUE  # type: ignore[no-any-return]

    def quit_loop() -> bool:
        loop.quit()
        return GLib.SOURCE_REMOVE  # type: ignore[no-any-return]

    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGTERM, quit_loop)
    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGINT, quit_loop)
    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGUSR1, drop_clients)

    print(server.get_bound_port(), flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
