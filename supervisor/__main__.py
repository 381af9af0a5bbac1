# `python -m supervisor`: hold the stop signals first, as bin/start-all does (cli.HELD_SIGNALS)
import _signal

_mask = _signal.pthread_sigmask(
    _signal.SIG_BLOCK, (_signal.SIGTERM, _signal.SIGINT, _signal.SIGQUIT, _signal.SIGHUP))

from supervisor.cli import main  # noqa: E402

raise SystemExit(main(mask=_mask))
