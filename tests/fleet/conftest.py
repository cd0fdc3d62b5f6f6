"""tests/fleet: print the fleet timings (up, down, ping, ...) in pytest's terminal summary."""
import fleetlib


def pytest_terminal_summary(terminalreporter):
    if fleetlib.TIMINGS:
        terminalreporter.section("fleet timings")
        for what, secs in fleetlib.TIMINGS.items():
            terminalreporter.write_line("%-40s %6.2f s" % (what, secs))
