"""Run the Jumpoint as a Windows service (pywin32), in-process.

Install, start and remove with::

    python -m jumpoint.windows_service --config C:\\jumpoint\\jumpoint.yaml install
    python -m jumpoint.windows_service start
    python -m jumpoint.windows_service stop
    python -m jumpoint.windows_service remove

The configuration path is kept in the service's registry parameters.  The
service builds the daemon with the same L{makeService} as `jumpoint serve`,
runs the reactor without signal handlers, and stops it from the service
control thread.  Logs go to C{jumpoint.log} beside the configuration as JSON
lines.  This module imports pywin32 only when run, so it is importable (and
type-checked) everywhere.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

SERVICE_NAME = "jumpoint"
DISPLAY_NAME = "Jumpoint privileged-access tunnels"


def run_service_body(config_path: str, stop_requested: Any) -> None:
    """Start the Jumpoint and run the reactor until C{stop_requested} is called."""
    from twisted.internet import reactor as default_reactor

    reactor: Any = default_reactor

    from jumpoint.config import load_config
    from jumpoint.logs import start_logging
    from jumpoint.service import makeService

    config = load_config(config_path)
    log_file = (Path(config_path).parent / "jumpoint.log").open("a", encoding="utf-8")
    start_logging("json", log_file)
    service = makeService(config, reactor)
    service.startService()
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    stop_requested(lambda: reactor.callFromThread(reactor.stop))
    reactor.run(installSignalHandlers=False)


try:  # pywin32 exists only on Windows
    import servicemanager
    import win32service
    import win32serviceutil

    HAVE_PYWIN32 = True
except ImportError:
    HAVE_PYWIN32 = False


if HAVE_PYWIN32:  # pragma: no cover - needs Windows

    class JumpointService(win32serviceutil.ServiceFramework):  # type: ignore[misc]
        """The service class; pywin32 finds it by name in this module."""

        _svc_name_ = SERVICE_NAME
        _svc_display_name_ = DISPLAY_NAME

        def __init__(self, args: list[str]) -> None:
            super().__init__(args)
            self._stop: Any = None
            self._stop_requested = False

        def SvcStop(self) -> None:
            self.ReportServiceStatus(win32service.SERVICE_STOP_PENDING)
            self._stop_requested = True
            if self._stop is not None:
                self._stop()

        SvcShutdown = SvcStop

        def SvcDoRun(self) -> None:
            config = win32serviceutil.GetServiceCustomOption(SERVICE_NAME, "config")
            servicemanager.LogInfoMsg(f"jumpoint starting with {config}")

            def remember(stop: Any) -> None:
                self._stop = stop
                if self._stop_requested:  # a stop arrived while starting
                    stop()

            try:
                run_service_body(config, remember)
            except Exception as error:  # reported to the Windows event log
                servicemanager.LogErrorMsg(f"jumpoint failed: {error}")
                raise
            servicemanager.LogInfoMsg("jumpoint stopped")


def main(argv: list[str]) -> None:  # pragma: no cover - needs Windows and pywin32
    """Install, start, stop or remove the service (pywin32's command line)."""
    if not HAVE_PYWIN32:
        sys.exit("jumpoint: the Windows service needs pywin32 (pip install pywin32)")
    config = None
    if "--config" in argv:
        index = argv.index("--config")
        if index + 1 >= len(argv):
            sys.exit("jumpoint: --config needs the path of jumpoint.yaml")
        config = str(Path(argv[index + 1]).absolute())
        del argv[index : index + 2]
    win32serviceutil.HandleCommandLine(JumpointService, argv=[sys.argv[0], *argv])
    if config is not None:  # after "install", the service's registry key exists
        win32serviceutil.SetServiceCustomOption(SERVICE_NAME, "config", config)


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
