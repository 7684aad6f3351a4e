import functools
import http.server
import threading

import pytest


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # keep the test output clean
        pass


@pytest.fixture
def http_server(tmp_path, monkeypatch):
    """A local HTTP server on 127.0.0.1 serving the directory it yields: ``(directory, base_url)``."""
    served = tmp_path / "served"
    served.mkdir()
    for name in ("no_proxy", "NO_PROXY"):  # never send requests for 127.0.0.1 through a proxy
        monkeypatch.setenv(name, "127.0.0.1,localhost")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(_QuietHandler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def closed_port_url():
    """The URL of a port on 127.0.0.1 where nothing listens (a stand-in for 'no network')."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"
