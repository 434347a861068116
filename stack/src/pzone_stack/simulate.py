"""``pzone simulate devices`` and ``pzone simulate photos``: simulated sensors and photographers on the real wire."""

from __future__ import annotations

import threading
import time
from typing import Annotated, Any

import typer
from rich.markup import escape

from pzone.cli.common import console, fail, settings_or_fail, stop_on_signals

simulate_app = typer.Typer(
    help="Simulated devices and clients on the real wire formats.", no_args_is_help=True
)


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
    from pzone_firmware.fleet import run_fleet
    from pzone_ingest.settings import Settings as IngestSettings

    check_id("zone_id", zone)
    url = mqtt_url or settings_or_fail(IngestSettings).mqtt_url.get_secret_value()
    stop = threading.Event()
    stop_on_signals(stop)
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

        stats = run_fleet(
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
    import httpx
    import numpy as np
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from pzone.settings import CoreSettings
    from pzone.telemetry import check_id
    from pzone.tilt import TILT_CLASSES
    from pzone_ingest.settings import Settings as IngestSettings
    from pzone_stack.photosim.client import ApiError
    from pzone_stack.photosim.photographer import Shot, Thresholds, photograph_round

    check_id("zone_id", zone)
    if (user is None) != (password is None):
        raise fail("give both --user and --password (or neither, to sign up a simulated client)")
    url = mqtt_url or settings_or_fail(IngestSettings).mqtt_url.get_secret_value()
    core = CoreSettings()
    rng = np.random.default_rng(seed)
    client = _signed_in(api, user, password)
    stop = threading.Event()
    stop_on_signals(stop)
    tilt_options = {
        "fall_rate_per_h": fall_rate,
        "lean_rate_per_h": lean_rate,
        "mean_fallen_s": mean_fallen,
        "mean_leaning_s": mean_leaning,
    }
    # Sequence numbers go on across runs: the fleet's state lives in the data folder.
    fleet = _PhotoFleet(url, devices, rate, zone, seed, tilt_options, core.data_dir / "fleet-photos", stop)
    uploaded = failed = 0
    classes: dict[str, int] = {}
    try:
        models = fleet.start()
        try:
            _wait_for_devices(client, sorted(models), wait_devices, stop)
        except (httpx.HTTPError, ApiError) as exc:
            raise fail(escape(f"device list: {exc}")) from None
        with Progress(
            TextColumn("[bold]photos[/bold]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("photos", total=count, info="")
            tally = {True: 0, False: 0}

            def on_shot(shot: Shot) -> None:
                tally[shot.uploaded] += 1
                if shot.uploaded:
                    classes[shot.true_class] = classes.get(shot.true_class, 0) + 1
                progress.update(task, advance=1, info=f"{tally[True]} uploaded, {tally[False]} failed")

            uploaded, failed = photograph_round(
                client,
                models,
                zone,
                count,
                rng=rng,
                interval_s=interval,
                size=(width, height),
                stop=stop,
                thresholds=Thresholds(core.tilt_upright_max_deg, core.tilt_fallen_min_deg),
                on_shot=on_shot,
            )
        # the readings just after the last photo should reach the database too
        stop.wait(2.0 / rate + 0.5)
    finally:
        stop.set()
        fleet.join()
        client.close()
    shown = ", ".join(f"{name} {classes.get(name, 0)}" for name in TILT_CLASSES)
    console.print(
        f"{uploaded} photos uploaded, {failed} failed, of {len(fleet.models)} devices in {zone}; "
        f"true tilt at the moment of each photo (for information, never sent): {shown}"
    )
    if failed and not uploaded:
        raise typer.Exit(code=1)


def _signed_in(api: str, user: str | None, password: str | None) -> Any:
    """A client of the API at ``api``, logged in as ``user``, or signed up as a new simulated client."""
    import httpx

    from pzone_stack.photosim.client import ApiClient, ApiError

    client = ApiClient(api)
    try:
        if user is not None and password is not None:
            client.login(user, password)
        else:
            email, _ = client.signup_random()
            console.print(f"signed up simulated client [bold]{escape(email)}[/bold]")
    except (httpx.HTTPError, ApiError) as exc:
        client.close()
        raise fail(escape(f"cannot sign in at {api}: {exc}")) from None
    return client


class _PhotoFleet:
    """The fleet being photographed, publishing in a thread of this process until ``stop`` is set."""

    def __init__(
        self,
        url: str,
        devices: int,
        rate: float,
        zone: str,
        seed: int,
        tilt_options: dict[str, float],
        state_dir: Any,
        stop: threading.Event,
    ) -> None:
        self.models: dict[str, Any] = {}
        self._ready = threading.Event()
        self._errors: list[BaseException] = []
        self._args = (url, devices, rate, 10.0**9, zone)
        self._options = {
            "seed": seed,
            "stop_event": stop,
            "state_dir": state_dir,
            "tilt_options": tilt_options,
            "on_start": self._on_start,
        }
        self._thread = threading.Thread(target=self._run, name="photo-fleet", daemon=True)

    def _on_start(self, by_device: dict[str, Any]) -> None:
        self.models.update(by_device)
        self._ready.set()

    def _run(self) -> None:
        from pzone_firmware.fleet import run_fleet

        try:
            run_fleet(*self._args, **self._options)
        except BaseException as exc:  # reported by the main thread
            self._errors.append(exc)
            self._ready.set()

    def start(self) -> dict[str, Any]:
        """Start publishing; returns each device's tilt model (by device id) once the devices run."""
        self._thread.start()
        self._ready.wait()
        if self._errors:
            raise fail(escape(f"the fleet did not start: {self._errors[0]}"))
        return self.models

    def join(self) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout=60)


def _wait_for_devices(client: Any, ids: list[str], wait_s: float, stop: threading.Event) -> None:
    """Until the API knows every device (ingest has stored their readings); a sentence when it does not in time."""
    deadline = time.monotonic() + wait_s
    with console.status("waiting for the devices' readings to reach the API (ingest)…"):
        while not stop.is_set():
            known = {d["id"] for d in client.devices()}
            if known.issuperset(ids):
                return
            if time.monotonic() > deadline:
                raise fail(
                    f"{len(set(ids) - known)} of {len(ids)} devices unknown to the API after {wait_s:g}s: "
                    "is an ingest worker (pzone ingest) storing this broker's readings in the API's database?"
                )
            stop.wait(0.5)
