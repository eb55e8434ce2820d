"""Debian's pebble (a real ACME test server) on loopback for kago serve's ACME tests and bench: its HTTPS
certificate made here with the openssl CLI (Debian's package ships none), names resolved by
pebble-challtestsrv's DNS (every name is 127.0.0.1), HTTP-01 validated on the port given (serve's plain
listener), TLS-ALPN-01 on the other (serve's TLS listener)."""
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time

from serve_util import free_port

PEBBLE = shutil.which("pebble")
CHALLTESTSRV = shutil.which("pebble-challtestsrv")


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _wait_port(port, proc, what, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not start on port {port}")


class Pebble:
    """pebble + pebble-challtestsrv. http_port: where pebble validates HTTP-01 (serve's --listen);
    tls_port: where it validates TLS-ALPN-01 (serve's --listen-tls)."""

    def __init__(self, http_port, validity_s=None, tls_port=None):
        self.dir = tempfile.mkdtemp(prefix="kago-pebble-")
        d = self.dir
        # pebble's own HTTPS: a CA (what serve's --acme-ca trusts) and a leaf for 127.0.0.1 and localhost
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-keyout", "ca.key", "-out", "ca.pem", "-days", "3", "-subj", "/CN=kago test pebble CA",
                 "-addext", "basicConstraints=critical,CA:TRUE", cwd=d)
        _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-keyout", "key.pem", "-out", "leaf.csr", "-subj", "/CN=localhost", cwd=d)
        with open(os.path.join(d, "leaf.ext"), "w") as f:
            f.write("basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
                    "subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        _openssl("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", "cert.pem", "-days", "3", "-extfile", "leaf.ext", cwd=d)
        self.ca = os.path.join(d, "ca.pem")
        self.http_port = http_port
        self.tls_port = tls_port or free_port()
        self.validity_s = validity_s
        self.port, self.mgmt = free_port(), free_port()
        self.dns, self.dns_mgmt = free_port(), free_port()
        self.directory = f"https://127.0.0.1:{self.port}/dir"
        self.proc = self.dns_proc = None
        self.start_dns()
        self.start()

    def start_dns(self):
        self.dns_log = open(os.path.join(self.dir, "challtestsrv.log"), "a")
        self.dns_proc = subprocess.Popen(
            [CHALLTESTSRV, "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "", "-dns01", f"127.0.0.1:{self.dns}",
             "-http01", "", "-https01", "", "-tlsalpn01", "", "-management", f"127.0.0.1:{self.dns_mgmt}"],
            stdout=self.dns_log, stderr=subprocess.STDOUT)
        _wait_port(self.dns_mgmt, self.dns_proc, "pebble-challtestsrv")

    def start(self):
        """(Again, after stop(): the same ports; a fresh CA and no accounts, as pebble keeps nothing.)"""
        conf = {"pebble": {"listenAddress": f"127.0.0.1:{self.port}",
                           "managementListenAddress": f"127.0.0.1:{self.mgmt}",
                           "certificate": os.path.join(self.dir, "cert.pem"),
                           "privateKey": os.path.join(self.dir, "key.pem"),
                           "httpPort": self.http_port, "tlsPort": self.tls_port,
                           "ocspResponderURL": "", "externalAccountBindingRequired": False}}
        if self.validity_s:  # the certificates' lifetime (Debian's pebble 2.4 has the setting)
            conf["pebble"]["certificateValidityPeriod"] = self.validity_s
        with open(os.path.join(self.dir, "pebble.json"), "w") as f:
            json.dump(conf, f)
        self.log = open(os.path.join(self.dir, "pebble.log"), "a")
        env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1"}
        self.proc = subprocess.Popen(
            [PEBBLE, "-config", os.path.join(self.dir, "pebble.json"), "-dnsserver", f"127.0.0.1:{self.dns}"],
            stdout=self.log, stderr=subprocess.STDOUT, env=env)
        _wait_port(self.port, self.proc, "pebble")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def close(self):
        self.stop()
        if self.dns_proc and self.dns_proc.poll() is None:
            self.dns_proc.terminate()
            self.dns_proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)

    def pebble_log(self):
        with open(os.path.join(self.dir, "pebble.log")) as f:
            return f.read()

    def root_pem(self):
        """The root of the certificates pebble issues now (a new one each time pebble starts)."""
        import ssl
        import urllib.request
        ctx = ssl.create_default_context(cafile=self.ca)
        with urllib.request.urlopen(f"https://127.0.0.1:{self.mgmt}/roots/0", context=ctx, timeout=10) as r:
            return r.read().decode()

    def validated(self, host):
        """How many HTTP-01 validations of host pebble ran (its log names the host in each task)."""
        return self.pebble_log().count(f'Value:"{host}"')
