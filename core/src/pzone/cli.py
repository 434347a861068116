"""The ``pzone`` command line: migrations, the API and its accounts, the ingest worker, simulators, the one-machine stack."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from pzone import demo, retrain

if TYPE_CHECKING:
    from pzone_api.settings import Settings as ApiSettings
    from pzone_ingest.settings import Settings as IngestSettings

app = typer.Typer(
    help="P-ZONE: tilt telemetry, photos, training and serving in one circle.", no_args_is_help=True
)
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
simulate_app = typer.Typer(
    help="Simulated devices and clients on the real wire formats.", no_args_is_help=True
)
user_app = typer.Typer(help="Accounts of the web front.", no_args_is_help=True)
photos_app = typer.Typer(help="Photo processing (the worker behind the API).", no_args_is_help=True)
logs_app = typer.Typer(help="Log files written under PZONE_LOG_DIR.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(logs_app, name="logs")
app.add_typer(photos_app, name="photos")
app.add_typer(simulate_app, name="simulate")
app.add_typer(user_app, name="user")
# The training circle's commands live in their own modules (their heavy imports are lazy there).
app.command("retrain")(retrain.command)
app.command("demo")(demo.command)
console = Console()


@app.callback()
def _setup(
    ctx: typer.Context,
    log_level: Annotated[
        str, typer.Option(help="Logging level: DEBUG, INFO, WARNING.", envvar="PZONE_LOG_LEVEL")
    ] = ("INFO"),
    log_dir: Annotated[
        Path | None,
        typer.Option(
            help="Also log to rotating files <command>-<hostname>.log in this folder (rotated hourly and on "
            "exit; see `pzone logs backup`).",
            envvar="PZONE_LOG_DIR",
        ),
    ] = None,
) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=log_level.upper(),
        format="%(name)s: %(message)s",
        handlers=[RichHandler(console=Console(stderr=True), show_path=False)],
    )
    if log_dir is not None:
        from pzone.logbackup import install_file_logging

        try:
            install_file_logging(log_dir, ctx.invoked_subcommand or "pzone", log_level)
        except OSError as exc:
            raise _fail(escape(f"cannot write log files in {log_dir}: {exc}")) from None


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code=2)


def _settings(module: str, package: str, overrides: dict[str, Any]) -> Any:
    """A deployable's Settings from the environment plus overrides; a clear error if its package is missing."""
    import importlib

    from pydantic import ValidationError

    try:
        settings_class = importlib.import_module(module).Settings
    except ImportError as exc:  # the core CLI is installed without that deployable's package
        raise _fail(
            f"this command needs the {package} package (uv sync installs the whole workspace)"
        ) from exc
    try:
        return settings_class(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise _fail(f"invalid settings:\n{exc}") from exc


def _ingest_settings(**overrides: Any) -> IngestSettings:
    return _settings("pzone_ingest.settings", "pzone-ingest", overrides)


def _api_settings(**overrides: Any) -> ApiSettings:
    return _settings("pzone_api.settings", "pzone-api", overrides)


# --- db --------------------------------------------------------------------------------------------------------------
@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
) -> None:
    """Apply the schema migrations to PZONE_DATABASE_URL (SQLite in PZONE_DATA_DIR by default)."""
    from pzone.db.engine import safe_url
    from pzone.migrations import current, upgrade
    from pzone.settings import CoreSettings

    url = CoreSettings().sqlalchemy_url
    upgrade(url, revision)
    console.print(f"database {safe_url(url)} at revision [bold]{current(url)}[/bold]")


@db_app.command("current")
def db_current() -> None:
    """Print the schema revision the database is at."""
    from pzone.migrations import current
    from pzone.settings import CoreSettings

    console.print(current(CoreSettings().sqlalchemy_url) or "empty (no migrations applied)")


def _schema_behind(url: str) -> str | None:
    """Why the database is not at the newest migration (None when it is), for hints; never raises."""
    alembic_log = logging.getLogger("alembic")
    level = alembic_log.level
    alembic_log.setLevel(logging.WARNING)  # its INFO lines (some at import) would drown the hint
    try:
        from alembic.script import ScriptDirectory

        from pzone.migrations import alembic_config, current

        head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
        at = current(url)
    except Exception as exc:  # unreachable database, bad URL: the hint says so, the caller goes on
        return f"could not read the schema revision ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
    finally:
        alembic_log.setLevel(level)
    if at == head:
        return None
    return f"the database is at revision {at or 'none (empty)'}, the code expects {head}"


# --- api -------------------------------------------------------------------------------------------------------------
@app.command()
def api(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port to listen on.")] = 8000,
) -> None:
    """Run the web front's JSON API (FastAPI under uvicorn); migrations are not applied, see `pzone db upgrade`."""
    settings = _api_settings()
    import uvicorn

    from pzone.db.engine import safe_url
    from pzone_api.main import create_app

    url = settings.sqlalchemy_url
    behind = _schema_behind(url)
    if behind:
        console.print(f"[yellow]hint:[/yellow] {escape(behind)}; run [bold]pzone db upgrade[/bold] first")
    if settings.cookie_secure and host not in ("127.0.0.1", "localhost", "::1"):
        console.print(
            "[yellow]hint:[/yellow] session cookies are Secure: browsers keep them over HTTPS only (or on "
            "localhost); serve behind TLS, or set PZONE_COOKIE_SECURE=false for a trusted plain-HTTP network"
        )
    console.print(f"database: {escape(safe_url(url))}; API docs: http://{host}:{port}/docs")
    uvicorn.run(create_app(settings), host=host, port=port, log_config=None)


# --- user ------------------------------------------------------------------------------------------------------------
class Role(StrEnum):
    client = "client"
    operator = "operator"


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        # Only the line end goes: a password may begin or end with spaces.
        return line.removesuffix("\n").removesuffix("\r")
    password: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return password


@user_app.command("create")
def user_create(
    email: Annotated[str, typer.Option(help="E-mail address, the login name (stored lower-cased).")],
    role: Annotated[Role, typer.Option(help="client photographs; operator also sees the dashboard.")] = (
        Role.client
    ),
    password_stdin: Annotated[
        bool,
        typer.Option("--password-stdin", help="Read the password from the first line of standard input."),
    ] = False,
) -> None:
    """Create an account in PZONE_DATABASE_URL; the password is prompted for (hidden) or read from stdin."""
    settings = _api_settings()
    from sqlalchemy.exc import SQLAlchemyError
    from sqlalchemy.orm import Session

    from pzone.db.engine import make_engine
    from pzone_api.security import EmailTaken, InvalidEmail, WeakPassword, create_user, normalize_email

    try:  # check the address before asking for a password
        normalize_email(email)
    except InvalidEmail as exc:
        raise _fail(f"invalid email: {escape(str(exc))}") from None
    password = _read_password(password_stdin)
    engine = make_engine(settings.sqlalchemy_url)
    try:
        with Session(engine, expire_on_commit=False) as session:
            user = create_user(session, email, password, role.value)
            session.commit()
    except InvalidEmail as exc:
        raise _fail(f"invalid email: {escape(str(exc))}") from None
    except WeakPassword as exc:
        raise _fail(f"weak password: {escape(str(exc))}") from None
    except EmailTaken as exc:
        raise _fail(f"an account with the email {escape(str(exc))} exists already") from None
    except SQLAlchemyError as exc:
        behind = _schema_behind(settings.sqlalchemy_url)
        hint = f"\nhint: {behind}; run pzone db upgrade" if behind else ""
        raise _fail(escape(f"database error: {str(exc).splitlines()[0][:300]}{hint}")) from None
    finally:
        engine.dispose()
    console.print(f"created {user.role} [bold]{escape(user.email)}[/bold] (id {user.id})")


# --- photos ----------------------------------------------------------------------------------------------------------
@photos_app.command("worker")
def photos_worker(
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="Worker threads (the image work releases the GIL mostly).")
    ] = 1,
    shutdown_timeout: Annotated[
        float, typer.Option(min=0.0, help="Seconds a SIGTERM waits for the photos in hand.")
    ] = 30.0,
) -> None:
    """Process uploaded photos from the queue (PZONE_REDIS_URL): checks, SHA-256, original, thumbnails, verdict.

    Same settings as the API (PZONE_*). SIGTERM finishes the photos in hand, then exits; SIGINT stops at once.
    """
    settings = _api_settings()
    if settings.redis_url is None or settings.processing_in_api:
        raise _fail(
            "no queue to work on: set PZONE_REDIS_URL (without it, or with PZONE_PROCESSING_IMMEDIATE=true, the "
            "API processes photos itself)"
        )
    from pzone.db.engine import make_engine, safe_url
    from pzone.storage import object_store_from_settings
    from pzone_api.processing import photo_queue_from_settings

    engine = make_engine(settings.sqlalchemy_url)
    queue = photo_queue_from_settings(settings, engine, object_store_from_settings(settings))
    console.print(
        f"photo worker: queue {settings.processing_queue_name!r}, {workers} thread(s), database "
        f"{escape(safe_url(settings.sqlalchemy_url))}"
    )
    try:
        queue.consumer(workers, graceful_signal="TERM", shutdown_timeout=shutdown_timeout).run()
    finally:
        queue.close()
        engine.dispose()


# --- logs ------------------------------------------------------------------------------------------------------------
@logs_app.command("backup")
def logs_backup(
    source: Annotated[
        Path | None,
        typer.Option(help="Folder of log files, searched recursively; default PZONE_LOG_DIR."),
    ] = None,
    prefix: Annotated[str, typer.Option(help="Key prefix in the bucket.")] = "logs/",
    bucket: Annotated[str | None, typer.Option(help="Bucket; default PZONE_S3_BUCKET.")] = None,
    host_label: Annotated[
        str | None,
        typer.Option(
            help="Key segment after the prefix; default this host's (pod's) name.",
            envvar="PZONE_LOG_HOST_LABEL",
        ),
    ] = None,
    delete_uploaded: Annotated[
        bool,
        typer.Option(
            "--delete-uploaded/--keep-uploaded",
            " /--keep",
            help="Delete each local file once its copy in S3 is verified (active files never).",
        ),
    ] = False,
    include_active: Annotated[
        bool, typer.Option("--include-active", help="Upload the active *.log files too (never deleted).")
    ] = False,
    min_age_s: Annotated[
        float, typer.Option(min=0.0, help="Leave files modified in the last N seconds alone.")
    ] = 60.0,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would happen; change nothing.")
    ] = False,
) -> None:
    """Upload rotated log files (<name>.log.<suffix>) to s3://BUCKET/<prefix><host>/<relative path>.

    Idempotent: a file S3 already has (same size and SHA-256) is skipped. With --delete-uploaded a local file is
    deleted only after a HEAD of its object shows the same size and SHA-256. Exit code 1 when any file failed,
    2 when the backup could not start (source, bucket, credentials).
    """
    from pydantic import ValidationError

    from pzone import logbackup
    from pzone.settings import CoreSettings

    try:
        settings = CoreSettings()
    except ValidationError as exc:
        raise _fail(escape(f"invalid settings:\n{exc}")) from None
    folder = source or settings.log_dir
    try:
        if folder is None:
            raise logbackup.BackupError("no log folder: pass --source or set PZONE_LOG_DIR")
        logbackup.check_source(folder)
        host = logbackup.check_host_label(host_label or logbackup.default_host_label())
        try:
            key_prefix = logbackup.normalize_prefix(prefix)
        except ValueError as exc:
            raise logbackup.BackupError(f"bad --prefix: {exc}") from None
        name = bucket or settings.s3_bucket or ""
        client = logbackup.s3_client(settings.s3_endpoint_url, settings.s3_region)
        logbackup.check_bucket(client, name)
    except logbackup.BackupError as exc:
        raise _fail(escape(str(exc))) from None

    def show(result: logbackup.FileResult) -> None:
        path = escape(result.file.path.as_posix())
        deleted = " [dim](local file deleted)[/dim]" if result.deleted and not dry_run else ""
        deleted = " [dim](would delete the local file)[/dim]" if result.deleted and dry_run else deleted
        if result.outcome is logbackup.Outcome.FAILED:
            console.print(f"[red]failed[/red]   {path}: {escape(result.detail)}")
        elif result.outcome is logbackup.Outcome.SKIPPED:
            console.print(f"[dim]skipped[/dim]  {path} (already in S3){deleted}")
        else:
            verb = "would upload" if dry_run else "uploaded"
            console.print(f"[green]{verb}[/green] {path} → {escape(result.key)}{deleted}")

    report = logbackup.backup_logs(
        client,
        name,
        folder,
        host=host,
        prefix=key_prefix,
        delete_uploaded=delete_uploaded,
        include_active=include_active,
        min_age_s=min_age_s,
        dry_run=dry_run,
        on_result=show,
    )
    colour = "red" if report.failed else "green"
    console.print(f"[{colour}]logs backup:[/{colour}] {escape(report.summary())}")
    if report.failed:
        raise typer.Exit(code=1)


# --- ingest ----------------------------------------------------------------------------------------------------------
def _stop_on_signals(stop: threading.Event, grace_s: float | None = None) -> None:
    def handler(signum: int, _frame: Any) -> None:
        logging.getLogger("pzone").info("%s: draining and stopping", signal.Signals(signum).name)
        stop.set()
        if grace_s is not None:
            # A drain that does not finish in time must not hang the process (nothing is lost: what was not
            # acknowledged comes back from the broker). The stacks show where it was stuck.
            watchdog = threading.Timer(grace_s, _give_up, args=(grace_s,))
            watchdog.daemon = True
            watchdog.start()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _give_up(grace_s: float) -> None:
    import faulthandler
    import sys

    print(
        f"drain did not finish within {grace_s:g}s: exiting; unacknowledged messages stay with the broker",
        file=sys.stderr,
        flush=True,
    )
    faulthandler.dump_traceback(all_threads=True)
    os._exit(3)


@app.command()
def ingest(
    client_id: Annotated[str | None, typer.Option(help="Stable MQTT client id (the session key).")] = None,
    metrics_port: Annotated[int | None, typer.Option(help="Prometheus metrics port; 0 disables.")] = None,
) -> None:
    """Run the MQTT ingest worker: the same processing as the Lambda, batched, acknowledged after commit."""
    settings = _ingest_settings(ingest_client_id=client_id, ingest_metrics_port=metrics_port)
    from pzone_ingest.worker import IngestWorker

    stop = threading.Event()
    _stop_on_signals(stop, grace_s=settings.ingest_stop_grace_s)
    worker = IngestWorker(settings)
    # The worker runs in its own thread so that signals only ever interrupt the main thread's idle wait.
    errors: list[BaseException] = []

    def run() -> None:
        try:
            worker.run(stop)
        except BaseException as exc:  # reported below, exit code 1
            errors.append(exc)

    thread = threading.Thread(target=run, name="ingest-worker")
    thread.start()
    while thread.is_alive():
        thread.join(0.5)
    if errors:
        raise errors[0]
    stats = worker.stats
    console.print(f"ingest stopped after {stats.batches} batches: {stats.totals.as_dict()}")


# --- simulate --------------------------------------------------------------------------------------------------------
@simulate_app.command("devices")
def simulate_devices(
    count: Annotated[int, typer.Option(min=1, max=2000, help="Number of virtual devices.")] = 10,
    rate: Annotated[float, typer.Option(min=0.01, max=100.0, help="Readings per second per device.")] = 1.0,
    duration: Annotated[float, typer.Option(min=0.1, help="Seconds to run.")] = 30.0,
    zone: Annotated[str, typer.Option(help="Zone id of the devices.")] = "zone-1",
    faulty_ratio: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of extra faulty payloads.")
    ] = 0.0,
    seed: Annotated[int, typer.Option(help="Random seed of the tilt behaviour.")] = 0,
    mqtt_url: Annotated[str | None, typer.Option(help="Broker URL; default PZONE_MQTT_URL.")] = None,
) -> None:
    """A fleet of virtual tilt sensors running the firmware logic, publishing on the real wire format."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from pzone.telemetry import check_id

    check_id("zone_id", zone)
    url = mqtt_url or _ingest_settings().mqtt_url.get_secret_value()
    fleet = _fleet_module()
    stop = threading.Event()
    _stop_on_signals(stop)
    with Progress(
        TextColumn("[bold]fleet[/bold]"),
        BarColumn(),
        TextColumn("{task.fields[info]}"),
        TimeRemainingColumn(),
    ) as progress:
        task = progress.add_task("fleet", total=duration, info="")
        started = time.monotonic()

        def on_progress(stats: Any) -> None:
            progress.update(
                task,
                completed=min(duration, time.monotonic() - started),
                info=f"{stats.published} readings acked",
            )

        stats = fleet.run_fleet(
            url,
            count,
            rate,
            duration,
            zone,
            seed=seed,
            faulty_ratio=faulty_ratio,
            stop_event=stop,
            on_progress=on_progress,
        )
        progress.update(task, completed=duration)
    console.print(
        f"{count} devices in {zone}: {stats.published} readings acknowledged, {stats.faulty_injected} faulty payloads, "
        f"{stats.buffer_drops} dropped from full buffers, {stats.reconnects} reconnects, {stats.undelivered} undelivered"
    )


@simulate_app.command("photos")
def simulate_photos(
    count: Annotated[int, typer.Option(min=1, max=100_000, help="Photos to take and upload.")] = 20,
    api: Annotated[str, typer.Option(help="Base URL of the API.")] = "http://127.0.0.1:8000",
    user: Annotated[
        str | None, typer.Option(help="Log in with this e-mail; default: sign up a new simulated client.")
    ] = None,
    password: Annotated[
        str | None, typer.Option(help="Password of --user.", envvar="PZONE_SIMULATE_PASSWORD")
    ] = None,
    devices: Annotated[
        int, typer.Option(min=1, max=500, help="Virtual devices of the in-process fleet.")
    ] = 6,
    zone: Annotated[str, typer.Option(help="Zone id of the devices.")] = "zone-photos",
    rate: Annotated[float, typer.Option(min=0.1, max=20.0, help="Readings per second per device.")] = 2.0,
    interval: Annotated[float, typer.Option(min=0.0, help="Seconds between two photos.")] = 1.0,
    fall_rate: Annotated[float, typer.Option(min=0.0, help="Falls per device and hour.")] = 120.0,
    lean_rate: Annotated[float, typer.Option(min=0.0, help="Leanings (tilted) per device and hour.")] = 150.0,
    mean_fallen: Annotated[
        float, typer.Option(min=0.1, help="Mean seconds a fallen device stays down.")
    ] = 20.0,
    mean_leaning: Annotated[float, typer.Option(min=0.1, help="Mean seconds a device stays tilted.")] = 20.0,
    width: Annotated[int, typer.Option(min=64, max=4096, help="Photo width in pixels.")] = 640,
    height: Annotated[int, typer.Option(min=64, max=4096, help="Photo height in pixels.")] = 480,
    seed: Annotated[int, typer.Option(help="Random seed of the fleet, the choices and the renderer.")] = 0,
    mqtt_url: Annotated[
        str | None, typer.Option("--mqtt-url", "--broker", help="Broker URL; default PZONE_MQTT_URL.")
    ] = None,
    wait_devices: Annotated[
        float, typer.Option(min=1.0, help="Seconds to wait for the devices to appear in the API.")
    ] = 60.0,
) -> None:
    """Virtual clients photograph the devices of an in-process fleet at their TRUE tilt and upload the photos.

    The fleet publishes to the broker; an ingest worker (`pzone ingest`, or `pzone up`) must store its readings in
    the API's database: the API accepts photos of known devices only, and the photos' labels come later from those
    readings. No label is sent with a photo.
    """
    from datetime import UTC, datetime

    import httpx
    import numpy as np
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from pzone.photosim.client import ApiClient, ApiError, DeviceState, photograph
    from pzone.settings import CoreSettings
    from pzone.telemetry import check_id, classify_tilt

    check_id("zone_id", zone)
    if (user is None) != (password is None):
        raise _fail("give both --user and --password (or neither, to sign up a simulated client)")
    url = mqtt_url or _ingest_settings().mqtt_url.get_secret_value()
    core = CoreSettings()
    fleet = _fleet_module()
    rng = np.random.default_rng(seed)
    client = ApiClient(api)
    try:
        if user is not None and password is not None:
            client.login(user, password)
        else:
            email, _ = client.signup_random()
            console.print(f"signed up simulated client [bold]{escape(email)}[/bold]")
    except (httpx.HTTPError, ApiError) as exc:
        client.close()
        raise _fail(escape(f"cannot sign in at {api}: {exc}")) from None

    stop = threading.Event()
    _stop_on_signals(stop)
    models: dict[str, Any] = {}
    ready = threading.Event()

    def on_start(by_device: dict[str, Any]) -> None:
        models.update(by_device)
        ready.set()

    fleet_errors: list[BaseException] = []

    def run_fleet() -> None:
        try:
            fleet.run_fleet(
                url,
                devices,
                rate,
                10.0**9,
                zone,
                seed=seed,
                stop_event=stop,
                state_dir=core.data_dir / "fleet-photos",  # sequence numbers go on across runs
                tilt_options={
                    "fall_rate_per_h": fall_rate,
                    "lean_rate_per_h": lean_rate,
                    "mean_fallen_s": mean_fallen,
                    "mean_leaning_s": mean_leaning,
                },
                on_start=on_start,
            )
        except BaseException as exc:  # reported by the main thread
            fleet_errors.append(exc)
            ready.set()

    fleet_thread = threading.Thread(target=run_fleet, name="photo-fleet", daemon=True)
    fleet_thread.start()
    uploaded = failed = 0
    classes: dict[str, int] = {}
    try:
        ready.wait()
        if fleet_errors:
            raise _fail(escape(f"the fleet did not start: {fleet_errors[0]}"))
        ids = sorted(models)
        deadline = time.monotonic() + wait_devices
        with console.status("waiting for the devices' readings to reach the API (ingest)…"):
            while not stop.is_set():
                try:
                    known = {d["id"] for d in client.devices()}
                except (httpx.HTTPError, ApiError) as exc:
                    raise _fail(escape(f"device list: {exc}")) from None
                if known.issuperset(ids):
                    break
                if time.monotonic() > deadline:
                    raise _fail(
                        f"{len(set(ids) - known)} of {len(ids)} devices unknown to the API after {wait_devices:g}s: "
                        "is an ingest worker (pzone ingest) storing this broker's readings in the API's database?"
                    )
                stop.wait(0.5)
        upright_max, fallen_min = core.tilt_upright_max_deg, core.tilt_fallen_min_deg
        with Progress(
            TextColumn("[bold]photos[/bold]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("photos", total=count, info="")
            next_at = time.monotonic()
            for _ in range(count):
                if stop.wait(max(0.0, next_at - time.monotonic())):
                    break
                next_at = time.monotonic() + interval
                device_id = ids[int(rng.integers(len(ids)))]
                tilt, azimuth = models[device_id].current()
                state = DeviceState(device_id, zone, tilt, azimuth, datetime.now(UTC))
                data = photograph(state, rng, size=(width, height))
                try:
                    client.upload(data, device_id=device_id, taken_at=state.at)
                except (httpx.HTTPError, ApiError) as exc:
                    failed += 1
                    logging.getLogger("pzone.simulate").warning("upload failed: %s", exc)
                else:
                    uploaded += 1
                    label = classify_tilt(tilt, upright_max, fallen_min).value
                    classes[label] = classes.get(label, 0) + 1
                progress.update(task, advance=1, info=f"{uploaded} uploaded, {failed} failed")
        # the readings just after the last photo should reach the database too
        stop.wait(2.0 / rate + 0.5)
    finally:
        stop.set()
        fleet_thread.join(timeout=60)
        client.close()
    shown = ", ".join(f"{name} {classes.get(name, 0)}" for name in ("upright", "tilted", "fallen"))
    console.print(
        f"{uploaded} photos uploaded, {failed} failed, of {len(models)} devices in {zone}; "
        f"true tilt at the moment of each photo (for information, never sent): {shown}"
    )
    if failed and not uploaded:
        raise typer.Exit(code=1)


def _fleet_module() -> Any:
    try:
        from pzone_firmware import fleet
    except ImportError as exc:
        raise _fail(
            "this command needs the pzone-firmware package (uv sync installs the whole workspace)"
        ) from exc
    return fleet


# --- up --------------------------------------------------------------------------------------------------------------
@app.command()
def up(
    devices: Annotated[int, typer.Option(min=1, max=500, help="Simulated devices per zone.")] = 8,
    zones: Annotated[int, typer.Option(min=1, max=20, help="Number of simulated zones.")] = 2,
    rate: Annotated[float, typer.Option(min=0.05, max=20.0, help="Readings per second per device.")] = 1.0,
    duration: Annotated[float, typer.Option(min=0.0, help="Seconds to run; 0 runs until Ctrl-C.")] = 0.0,
    faulty_ratio: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of extra faulty payloads.")
    ] = 0.02,
    broker_port: Annotated[int, typer.Option(min=1, max=65535, help="Port of the embedded broker.")] = 11883,
    api_port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port of the API and web UI; 0: no API.")
    ] = 8000,
) -> None:
    """One machine, embedded defaults: broker + migrations + ingest + simulated fleet + API and web UI."""
    from pzone.db.engine import make_engine, safe_url
    from pzone.migrations import upgrade
    from pzone.status import StatusBoard

    external_broker = "PZONE_MQTT_URL" in os.environ
    overrides: dict[str, Any] = {}
    if not external_broker:
        overrides = {
            "mqtt_url": f"mqtt://127.0.0.1:{broker_port}",
            "mqtt_protocol": "3.1.1",
            "ingest_shared_group": "",
        }
    settings = _ingest_settings(**overrides)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    broker = None
    if not external_broker:
        from pzone.broker import EmbeddedBroker
        from pzone_ingest.settings import mqtt_endpoint

        host, port, _tls, _user, _password = mqtt_endpoint(settings.mqtt_url.get_secret_value())
        broker = EmbeddedBroker(host, port)
        try:
            broker.start()
        except (RuntimeError, TimeoutError) as exc:
            raise _fail(str(exc)) from exc
    url = settings.sqlalchemy_url
    upgrade(url)
    console.print(
        f"database: {safe_url(url)}; broker: {'embedded ' if broker else ''}{_public_mqtt(settings)}"
    )
    if settings.ingest_metrics_port:
        console.print(f"ingest metrics: http://127.0.0.1:{settings.ingest_metrics_port}/metrics")

    from pzone_ingest.worker import IngestWorker

    stop = threading.Event()
    _stop_on_signals(stop)
    worker = IngestWorker(settings)
    worker_thread = threading.Thread(target=worker.run, args=(stop,), name="ingest", daemon=True)
    worker_thread.start()
    fleet = _fleet_module()
    fleet_threads = [
        threading.Thread(
            target=fleet.run_fleet,
            args=(settings.mqtt_url.get_secret_value(), devices, rate, duration or 10**9, f"zone-{z + 1}"),
            kwargs={
                "seed": z,
                "faulty_ratio": faulty_ratio,
                "stop_event": stop,
                "state_dir": settings.data_dir / "fleet",
            },
            name=f"fleet-zone-{z + 1}",
            daemon=True,
        )
        for z in range(zones)
    ]
    for thread in fleet_threads:
        thread.start()
    api, photo_worker = _start_api(api_port) if api_port else (None, None)
    board = StatusBoard(make_engine(url))
    deadline = time.monotonic() + duration if duration else None
    try:
        board.live(console, stop, deadline)
    finally:
        stop.set()
        for thread in fleet_threads:
            thread.join(timeout=30)
        worker_thread.join(timeout=60)
        if api is not None:
            api.should_exit = True
        if photo_worker is not None:
            photo_worker.stop(graceful=True)
        if broker is not None:
            broker.stop()
    console.print(board.render())
    console.print(f"ingest: {worker.stats.totals.as_dict()}")


def _start_api(port: int) -> tuple[Any, Any]:
    """The API and web UI in a background thread of ``pzone up`` (plain HTTP on localhost: no Secure cookies).

    Embedded (no PZONE_REDIS_URL) the API processes photos itself (huey's immediate mode); with a Redis queue,
    a photo worker (a huey consumer) runs in threads of this process too. Returns (server, consumer or None).
    """
    try:
        import uvicorn

        from pzone_api.main import create_app
        from pzone_api.settings import Settings as ApiSettings
    except ImportError as exc:
        raise _fail("pzone up needs the pzone-api package (uv sync installs the whole workspace)") from exc
    settings = ApiSettings(cookie_secure=False)
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, name="api", daemon=True).start()
    consumer = None
    if not settings.processing_in_api:
        from pzone.db.engine import make_engine
        from pzone.storage import object_store_from_settings
        from pzone_api.processing import photo_queue_from_settings

        queue = photo_queue_from_settings(
            settings, make_engine(settings.sqlalchemy_url), object_store_from_settings(settings)
        )
        consumer = queue.consumer(2, in_thread=True, shutdown_timeout=30)
        consumer.start()
        console.print(f"photo worker: 2 threads on the Redis queue {settings.processing_queue_name!r}")
    console.print(
        f"web UI and API: http://127.0.0.1:{port}/  (API docs: /docs; an operator for the dashboard: "
        "pzone user create --role operator --email you@example.com)"
    )
    return server, consumer


def _public_mqtt(settings: IngestSettings) -> str:
    from pzone_ingest.settings import mqtt_endpoint

    host, port, tls, _user, _password = mqtt_endpoint(settings.mqtt_url.get_secret_value())
    return f"{'mqtts' if tls else 'mqtt'}://{host}:{port}"


def main() -> None:
    app()


if __name__ == "__main__":
    main()
