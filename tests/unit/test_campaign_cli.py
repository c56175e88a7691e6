"""`hapack lab campaign` stopped by SIGTERM (how a background run is stopped: a
background job of a non-interactive shell ignores SIGINT) must end like Ctrl-C: the
run's own clean-up happens and the lab is kept with its logs, never left running with
its client, samplers and simulators orphaned."""

import signal
import subprocess
import sys
import textwrap


def test_a_background_campaign_with_sigint_ignored_still_stops_on_sigterm():
    """The real entry point in a child that ignores SIGINT, as '&' in a script makes it."""
    script = textwrap.dedent("""
        import signal, sys, time
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        from hapack.lab import campaign, cli
        class Run:
            def __init__(self, *a, **k): self.lab = None
            def run(self):
                print("running", flush=True)
                time.sleep(30)
        campaign.Campaign = Run
        campaign.keep_or_remove = lambda *a, **k: print("kept", flush=True)
        try:
            cli.main(["campaign", "--manager", "hamon", "--faults", "1", "--seed", "1"])
        except KeyboardInterrupt:
            print("interrupted", flush=True)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().startswith("campaign: manager hamon")
        assert child.stdout.readline().strip() == "running"
        child.send_signal(signal.SIGTERM)
        out, _ = child.communicate(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert out.split() == ["kept", "interrupted"]
