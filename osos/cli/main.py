"""The `osos` command line: one typer app, each command group in its own module."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="osos",
    help="OSOS: open-source metering head-end (read, program and bill meters).",
    no_args_is_help=True,
    add_completion=False,
)



@app.callback()
def _root() -> None:
    """OSOS: open-source metering head-end."""


# Each module below owns its commands and registers them on `app`.
# Keep the imports light: heavy libraries are imported inside the command functions.
from osos.cli import bill as _bill  # noqa: E402
from osos.cli import decode as _decode  # noqa: E402
from osos.cli import dlms as _dlms  # noqa: E402
from osos.cli import fare as _fare  # noqa: E402
from osos.cli import field as _field  # noqa: E402
from osos.cli import logs as _logs  # noqa: E402
from osos.cli import modbus as _modbus  # noqa: E402
from osos.cli import modem as _modem  # noqa: E402
from osos.cli import schedule as _schedule  # noqa: E402
from osos.cli import server as _server  # noqa: E402
from osos.cli import tariff_tools as _tariff_tools  # noqa: E402
from osos.cli import users as _users  # noqa: E402

_bill.register(app)
_decode.register(app)
_dlms.register(app)
_fare.register(app)
_logs.register(app)
_field.register(app)
_modbus.register(app)
_modem.register(app)
_schedule.register(app)
_server.register(app)
_tariff_tools.register(app)
_users.register(app)


if __name__ == "__main__":  # pragma: no cover
    app()
