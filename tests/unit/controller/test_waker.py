"""The loop's wake-up is safe in a signal handler (SIGHUP reloads, SIGTERM stops).

A handler runs in the main thread between two bytecodes of whatever it was doing. With a
``threading.Event``, a handler's ``set()`` that lands while the loop is inside ``clear()`` or
``wait()`` waits for a lock its own thread holds: the daemon froze so in a chaos test (a
SIGHUP, then no tick for two minutes). The same script with ``threading.Event`` in place of
``Waker`` hangs within milliseconds (checked by hand); this runs it in a subprocess with a
timer signal every 0.2 ms for 1.5 s and needs it to finish.
"""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import signal, time
from senex_scale.controller.loop import Waker
w = Waker()
fired = 0
def handler(*_):
    global fired
    fired += 1
    w.set()
signal.signal(signal.SIGALRM, handler)
signal.setitimer(signal.ITIMER_REAL, 0.0002, 0.0002)
end = time.monotonic() + 1.5
woken = 0
while time.monotonic() < end:
    w.clear()
    woken += w.wait(0.01)
signal.setitimer(signal.ITIMER_REAL, 0, 0)
print(fired, woken)
"""


def test_a_signal_handler_can_wake_the_loop_at_any_moment() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    fired, woken = (int(x) for x in done.stdout.split())
    assert fired > 1000, fired
    assert woken > 100, woken  # the waits ended early: the handler's wake-ups arrived
