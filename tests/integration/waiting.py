"""wait_for, without pytest: the serve helpers (serve_util, acme_util) are imported by benches too, which
may run under a Python that has no pytest."""
import time


def wait_for(cond, timeout=5.0, step=0.02):
    """cond()'s first true value within timeout seconds, else its last value."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(step)
    return cond()
