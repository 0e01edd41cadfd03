"""Orchestration of ``electrocloud demo``: start, watch, drain, stop, reconcile."""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import yaml
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from electrocloud.demo.billing_step import run_billing, write_accounts
from electrocloud.demo.metrics import Samples, by_label, scrape, total
from electrocloud.demo.processes import (
    Child,
    DemoError,
    electrocloud_command,
    find_mosquitto,
    free_port,
    mosquitto_child,
    wait_for_port,
)
from electrocloud.demo.report import MeterReport, load_ground_truth, reconcile, report_dict
from electrocloud.stores.sqlite import SqliteStore

log = logging.getLogger(__name__)
GATEWAY_ID = "gw-demo"


@dataclass(frozen=True)
class DemoPlan:
    meters: int
    start: datetime  # simulated, UTC
    end: datetime
    speed: float  # simulated seconds per real second
    read_every_s: float  # simulated seconds between two reads of a meter
    seed: int
    out: Path
    broker: Literal["auto", "mosquitto", "amqtt"] = "auto"
    bill_period: str | None = None  # "2026-11" or "2026-12-01..2026-12-03"; None: no billing

    @property
    def wall_seconds(self) -> float:
        return (self.end - self.start).total_seconds() / self.speed

    @property
    def poll_interval_s(self) -> float:
        return self.read_every_s / self.speed


#: Simulated before and after the billed days, so that local days in any time zone
#: from UTC-12 to UTC+14 have reads on both sides of their boundaries.
MARGIN_BEFORE = timedelta(hours=14)
MARGIN_AFTER = timedelta(hours=12)


def default_window(days: int | None, now: datetime | None = None) -> tuple[datetime, datetime, str]:
    """``(start, end, billing period)``: the previous calendar month, or the last ``days``
    whole days, with margins for time zones.

    The end stays before ``now``: device timestamps from the future are refused.
    """
    now = now or datetime.now(UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if days is not None:
        first = midnight - timedelta(days=days)
        period = f"{first:%Y-%m-%d}..{midnight:%Y-%m-%d}"
        start, end = first, midnight
    else:
        end = midnight.replace(day=1)
        start = (end - timedelta(days=1)).replace(day=1)
        period = f"{start:%Y-%m}"
    latest = now - timedelta(minutes=1)
    return start - MARGIN_BEFORE, min(end + MARGIN_AFTER, latest), period


@dataclass
class Progressed:
    polls_ok: float = 0.0
    committed: float = 0.0
    published: float = 0.0
    stored: float = 0.0
    edge_backlog: float = 0.0
    backend_backlog: float = 0.0
    rejected: float = 0.0
    edge: Samples | None = None
    backend: Samples | None = None
    committed_by_meter: dict[str, float] = field(default_factory=dict)

    def line(self) -> str:
        return (
            f"polled {self.polls_ok:,.0f} · published {self.published:,.0f} · "
            f"stored {self.stored:,.0f} · backlog {self.edge_backlog + self.backend_backlog:,.0f}"
            + (f" · rejected {self.rejected:,.0f}" if self.rejected else "")
        )


class Demo:
    def __init__(self, plan: DemoPlan, console: Console | None = None) -> None:
        self.plan = plan
        self.console = console or Console(stderr=True)
        self.out = plan.out
        self.logs = self.out / "logs"
        self.children: list[Child] = []
        self.edge_metrics_port = free_port()
        self.backend_http_port = free_port()
        self.db_path = self.out / "readings.sqlite"
        self.state = Progressed()
        self.mqtt_protocol: Literal["5", "3.1.1"] = "5"

    # --- setup ---------------------------------------------------------------------

    def _prepare_out(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        stale = ("readings.sqlite", "edge-queue.sqlite", "ground-truth.csv", "dead-letters.sqlite")
        shutil.rmtree(self.out / "invoices", ignore_errors=True)
        for name in stale:
            path = self.out / name
            for suffix in ("", "-wal", "-shm", ".lock"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        for old_log in self.logs.glob("*.log"):
            old_log.unlink()

    def _spawn(self, child: Child) -> Child:
        self.children.append(child.start())
        return child

    def _start_broker(self) -> str:
        """Mosquitto from PATH when present (or asked for), else the embedded amqtt broker."""
        port = free_port()
        binary = find_mosquitto() if self.plan.broker != "amqtt" else None
        if binary is not None:
            self._spawn(mosquitto_child(binary, self.out / "broker", port, self.logs))
        elif self.plan.broker == "mosquitto":
            raise DemoError("mosquitto not found: install it (apt-get install mosquitto)")
        else:
            self.console.print(
                "[yellow]Mosquitto not found: using the embedded amqtt broker (MQTT 3.1.1, "
                "sessions in memory). Install mosquitto for the real thing."
            )
            self.mqtt_protocol = "3.1.1"
            argv = [sys.executable, "-m", "electrocloud.demo.embedded_broker", str(port)]
            self._spawn(Child("amqtt", argv, self.logs))
        wait_for_port(port)
        return f"mqtt://127.0.0.1:{port}"

    def _start_simulator(self, mqtt_url: str) -> Path:
        edge_yaml = self.out / "edge.yaml"
        edge_yaml.unlink(missing_ok=True)
        plan = self.plan
        self._spawn(
            Child(
                "simulator",
                electrocloud_command(
                    "simulate",
                    f"--meters={plan.meters}",
                    f"--seed={plan.seed}",
                    f"--speed={plan.speed}",
                    f"--start={plan.start.isoformat()}",
                    "--port=0",
                    f"--gateway-id={GATEWAY_ID}",
                    f"--ground-truth={self.out / 'ground-truth.csv'}",
                    f"--edge-config={edge_yaml}",
                    f"--fleet-file={self.out / 'fleet.json'}",
                    f"--mqtt-url={mqtt_url}",
                    f"--poll-interval={plan.poll_interval_s}",
                ),
                self.logs,
            )
        )
        deadline = time.monotonic() + 120
        while not edge_yaml.exists():
            self.children[-1].check_alive()
            if time.monotonic() > deadline:
                raise DemoError("the simulator did not write its edge config within 120 s")
            time.sleep(0.1)
        return edge_yaml

    def _write_edge_config(self, generated: Path) -> Path:
        config: dict[str, Any] = yaml.safe_load(generated.read_text())
        config["queue"] = {"path": str(self.out / "edge-queue.sqlite"), "commit_interval_s": 0.5}
        config["health"] = {"metrics_port": self.edge_metrics_port, "host": "127.0.0.1"}
        # amqtt drops a v5 CONNECT without answering, so "auto" could not fall back.
        config["mqtt"]["protocol"] = self.mqtt_protocol
        path = self.out / "edge.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def _write_backend_config(self, mqtt_url: str) -> Path:
        config = {
            "mqtt": {
                "url": mqtt_url,
                "client_id": "electrocloud-demo-backend",
                "protocol": self.mqtt_protocol,
            },
            "store": {"type": "sqlite", "sqlite": {"path": str(self.db_path)}},
            "batch": {"max_readings": 5000, "max_delay_ms": 200},
            "dead_letter": {"path": str(self.out / "dead-letters.sqlite")},
            "http": {"host": "127.0.0.1", "port": self.backend_http_port},
        }
        path = self.out / "backend.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    # --- watching ------------------------------------------------------------------

    def _observe(self) -> Progressed:
        edge = scrape(self.edge_metrics_port) or self.state.edge
        backend = scrape(self.backend_http_port) or self.state.backend
        self.state = Progressed(
            polls_ok=total(edge, "electrocloud_edge_polls_total", result="ok"),
            committed=total(edge, "electrocloud_edge_readings_committed_total"),
            published=total(edge, "electrocloud_edge_published_readings_total"),
            stored=total(backend, "electrocloud_backend_readings_written_total"),
            edge_backlog=total(edge, "electrocloud_edge_queue_depth"),
            backend_backlog=total(backend, "electrocloud_backend_backlog_readings"),
            rejected=total(backend, "electrocloud_backend_messages_rejected_total"),
            edge=edge,
            backend=backend,
            committed_by_meter=by_label(
                edge, "electrocloud_edge_readings_committed_total", "meter_id"
            ),
        )
        return self.state

    def _check_children(self) -> None:
        for child in self.children:
            child.check_alive()

    def _wait(self, what: str, done: Any, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not done(self._observe()):
            self._check_children()
            if time.monotonic() > deadline:
                raise DemoError(f"timed out after {timeout_s:.0f} s waiting for {what}")
            time.sleep(0.2)

    def _run_period(self, sim_started: float) -> None:
        plan = self.plan
        span = (plan.end - plan.start).total_seconds()
        interactive = self.console.is_terminal
        columns = (
            TextColumn("[bold]{task.fields[sim]}"),
            BarColumn(),
            TaskProgressColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[stats]}"),
        )
        with Progress(*columns, console=self.console, disable=not interactive) as progress:
            task = progress.add_task("sim", total=span, sim="", stats="")
            last_print = 0.0
            while True:
                elapsed = (time.monotonic() - sim_started) * plan.speed
                now_sim = plan.start + timedelta(seconds=min(elapsed, span))
                state = self._observe()
                self._check_children()
                progress.update(
                    task,
                    completed=min(elapsed, span),
                    sim=now_sim.strftime("%Y-%m-%d %H:%M UTC"),
                    stats=state.line(),
                )
                if not interactive and time.monotonic() - last_print > 10:
                    last_print = time.monotonic()
                    self.console.print(f"{now_sim:%Y-%m-%d %H:%M} UTC  {state.line()}")
                # One more read interval so the last boundary has a read after it.
                if elapsed >= span + plan.read_every_s:
                    return
                time.sleep(0.25)

    # --- the run -------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        plan = self.plan
        self._prepare_out()
        self.console.print(
            f"ElectroCloud demo: {plan.meters} meters, {plan.start:%Y-%m-%d %H:%M} to "
            f"{plan.end:%Y-%m-%d %H:%M} UTC at {plan.speed:g}x "
            f"(about {plan.wall_seconds / 60:.1f} min), a read every "
            f"{plan.read_every_s / 60:g} simulated min; output in {self.out}"
        )
        started = time.monotonic()
        try:
            mqtt_url = self._start_broker()
            backend_yaml = self._write_backend_config(mqtt_url)
            self._spawn(
                Child(
                    "backend",
                    electrocloud_command("backend", "--config", str(backend_yaml)),
                    self.logs,
                )
            )
            generated = self._start_simulator(mqtt_url)
            sim_started = time.monotonic()
            edge_yaml = self._write_edge_config(generated)
            self._spawn(
                Child("edge", electrocloud_command("edge", "--config", str(edge_yaml)), self.logs)
            )
            self._run_period(sim_started)
            self._drain_and_stop()
        finally:
            self.stop_all()
        summary = self._finish(time.monotonic() - started)
        if self.plan.bill_period:
            summary["invoices"] = self._bill(self.plan.bill_period)
            (self.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return summary

    def _bill(self, period: str) -> list[dict[str, str]]:
        self.console.print(f"billing {period} for every customer with the example tariffs")
        accounts = write_accounts(self.out / "fleet.json", self.out / "accounts.yaml")
        rows = run_billing(
            self.db_path, accounts, period, self.out / "invoices", self.logs / "billing.log"
        )
        table = Table(title=f"Invoices for {period} (JSON, HTML, PDF in {self.out / 'invoices'})")
        for column in ("meter", "customer", "tariff", "import kWh", "of it est.", "export kWh"):
            table.add_column(
                column, justify="right" if "kWh" in column or "est" in column else "left"
            )
        table.add_column("amount", justify="right")
        for row in rows:
            table.add_row(
                row.meter_id,
                row.customer,
                row.tariff_id,
                f"{Decimal(row.import_kwh):,.3f}",
                f"{Decimal(row.estimated_kwh):,.3f}",
                f"{Decimal(row.export_kwh):,.3f}",
                f"{Decimal(row.total):,.2f} {row.currency}",
            )
        self.console.print(table)
        return [asdict(row) for row in rows]

    def _child(self, name: str) -> Child:
        return next(c for c in self.children if c.name == name)

    def _drain_and_stop(self) -> None:
        """Stop the meters, let the edge drain its queue and the backend write it all."""
        self.console.print("period done: stopping the meters and draining the pipeline")
        self._child("simulator").stop()
        self._wait(
            "the edge queue to drain",
            lambda s: s.edge_backlog == 0 and s.published >= s.committed > 0,
            120,
        )
        committed = self.state.committed
        self._child("edge").stop()
        self._wait(
            "the backend to store every published reading",
            lambda s: s.stored >= committed and s.backend_backlog == 0,
            120,
        )
        self._child("backend").stop()

    def stop_all(self) -> None:
        """Stop every child still running, newest first (Ctrl-C lands here too)."""
        for child in reversed(self.children):
            child.stop(timeout_s=20)

    def _finish(self, wall_s: float) -> dict[str, Any]:
        committed = {m: int(v) for m, v in self.state.committed_by_meter.items()}
        store = SqliteStore(self.db_path)
        try:
            reports = reconcile(store, committed, load_ground_truth(self.out / "ground-truth.csv"))
        finally:
            store.close()
        lost = sum(r.lost for r in reports)
        summary: dict[str, Any] = {
            "meters": self.plan.meters,
            "start": self.plan.start.isoformat(),
            "end": self.plan.end.isoformat(),
            "speed": self.plan.speed,
            "read_every_s": self.plan.read_every_s,
            "seed": self.plan.seed,
            "wall_seconds": round(wall_s, 1),
            "readings_committed": sum(committed.values()),
            "readings_stored": sum(r.stored for r in reports),
            "readings_lost": lost,
            "messages_rejected": self.state.rejected,
            "database": str(self.db_path),
            "meters_detail": [report_dict(r) for r in reports],
        }
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        self.console.print(meter_table(reports))
        verdict = "[green]0 readings lost" if lost == 0 else f"[red]{lost} readings LOST"
        self.console.print(
            f"{summary['readings_stored']:,} readings stored of "
            f"{summary['readings_committed']:,} taken; {verdict}[/]; "
            f"{self.state.rejected:.0f} messages rejected. Summary: {self.out / 'summary.json'}"
        )
        return summary


def meter_table(reports: list[MeterReport]) -> Table:
    table = Table(title="Per meter: stored vs the simulator's ground truth")
    for column in ("meter", "readings", "lost", "import kWh stored", "import kWh true", "Δ kWh"):
        table.add_column(column, justify="left" if column == "meter" else "right")
    table.add_column("export kWh", justify="right")
    for r in reports:
        error = r.import_error_kwh
        table.add_row(
            r.meter_id,
            f"{r.stored:,}",
            str(r.lost) if r.lost == 0 else f"[red]{r.lost}",
            f"{r.stored_import_kwh:,.3f}",
            "?" if r.true_import_kwh is None else f"{r.true_import_kwh:,.3f}",
            "?" if error is None else f"{error:+.3f}",
            f"{r.stored_export_kwh:,.3f}",
        )
    return table
