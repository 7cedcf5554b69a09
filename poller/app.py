"""App wiring shared by the command line and the simulator: load a config with its
profiles, serve (poll, /metrics, notifications, reload on SIGHUP), probe."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import signal
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from poller import __version__
from poller.config import Config, check_profiles, load_config
from poller.config_values import parse_listen_address
from poller.driver import DriverContext, PollSpec, driver_for
from poller.errors import ConfigError, ProfileError
from poller.exporter import attach as attach_exposition
from poller.http import HttpServer, WebConfig
from poller.model import PollResult
from poller.profiles import ProfileSet, load_profiles
from poller.scheduler import Scheduler, TargetRunner
from poller.store import Store

if TYPE_CHECKING:
    from poller.cluster.wiring import ClusterMember

log = logging.getLogger("hwpoller")


def load_all(path: str) -> tuple[Config, ProfileSet]:
    """Load a config and the profiles it can use, checking `profile:` references."""
    config = load_config(path)
    try:
        profiles = load_profiles(config.settings.profile_dirs)
    except ProfileError as exc:
        raise ConfigError(str(exc).splitlines()) from None
    known = {n: profiles.get(n).protocol for n in profiles.names}
    check_profiles(config, known)
    return config, profiles


def raise_open_files_limit() -> None:
    """Lift the soft RLIMIT_NOFILE to the hard limit: each SNMP target holds a UDP socket."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def setup_logging(level: str) -> None:
    """Plain one-line log records on stderr."""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


async def reload_config(
    config_path: str,
    scheduler: Scheduler,
    log_level_fixed: bool = True,
    owned: Callable[[Config], Config] | None = None,
) -> Config | None:
    """Re-read the config file and apply it; on any error keep the running config. Targets
    whose settings did not change keep polling, with their sessions. `owned` (cluster mode)
    narrows a config to the targets this member polls."""
    try:
        # Reading and validating a big file takes a while; in a thread, polls and their
        # deadlines keep running on the event loop meanwhile.
        new_config, new_profiles = await asyncio.to_thread(load_all, config_path)
    except ConfigError as exc:
        log.error("reload failed, keeping the running config:\n%s", exc)
        return None
    except Exception:  # a bug in loading must not leave a half-applied reload
        log.exception("reload failed unexpectedly, keeping the running config")
        return None
    if not log_level_fixed:
        logging.getLogger().setLevel(new_config.settings.log_level.upper())
    restarted = await scheduler.apply(owned(new_config) if owned else new_config, new_profiles)
    log.info(
        "reloaded %s: %d targets, %d restarted",
        config_path,
        len(new_config.targets),
        restarted,
    )
    return new_config


async def serve(
    config_path: str, listen: str | None, web: WebConfig, log_level_fixed: bool = False
) -> int:
    """Poll and serve until SIGTERM/SIGINT; reload on SIGHUP. `log_level_fixed`: the log
    level came from the command line, so settings.log_level does not change it."""
    config, profiles = load_all(config_path)
    if listen is not None:
        try:
            parse_listen_address(listen, 9730)
        except ValueError as exc:
            raise ConfigError([f"--web.listen-address: {exc}"]) from None
    raise_open_files_limit()
    store = Store()
    attach_exposition(store)  # each target's text is rendered by its poll, not by a scrape
    # One reload (or ownership change) at a time: SIGHUPs sent in a burst apply in order,
    # never interleaved with each other or with targets moving between cluster members.
    reloading = asyncio.Lock()
    cluster = await _join_cluster(config, reloading)
    if cluster is None:
        scheduler = Scheduler(config, profiles, store)
    else:
        scheduler = Scheduler(cluster.scheduled(), profiles, store, cluster.make_driver)
    address = listen or config.settings.listen_address
    # Bound before polling starts: a port in use is reported (one line, exit 1) by main().
    # Imported here: pysnmp is only needed by `run`.
    from poller.snmp.notifications import NotificationReceiver  # noqa: PLC0415

    receiver = NotificationReceiver(scheduler)
    render = cluster.render(receiver.exposition) if cluster else receiver.exposition
    server = HttpServer(address, store, render, web)
    await scheduler.start()
    server.start()
    await receiver.start(config)
    if cluster is not None:
        cluster.attach(scheduler)
    loop = asyncio.get_running_loop()
    log.info(
        "hwpoller %s polling %d targets, serving http://%s/metrics (event loop: %s)",
        __version__,
        len(config.targets),
        address,
        type(loop).__module__.partition(".")[0],
    )
    stop = asyncio.Event()

    async def reload() -> None:
        async with reloading:
            new_config = await reload_config(
                config_path, scheduler, log_level_fixed, cluster.narrow if cluster else None
            )
            if new_config:
                await receiver.update(new_config)
            if new_config and listen is None and new_config.settings.listen_address != address:
                log.warning("settings.listen_address changed; it takes effect at restart")

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # The loop keeps only weak references to tasks: hold each reload until it has finished.
    reloads: set[asyncio.Task[None]] = set()

    def start_reload() -> None:
        task = loop.create_task(reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, start_reload)
    await stop.wait()
    log.info("shutting down")
    if cluster is not None:
        await cluster.stop()  # the lease goes back first: the others take over at once
    server.stop()
    receiver.stop()
    await scheduler.stop()
    return 0


async def _join_cluster(config: Config, lock: asyncio.Lock) -> ClusterMember | None:
    """In cluster mode, join (None when the config has no `cluster:` section)."""
    if config.cluster is None:
        return None
    # Imported here: standalone hwpoller never loads the cluster code.
    from poller.cluster.wiring import ClusterMember  # noqa: PLC0415

    cluster = ClusterMember(config, lock)
    await cluster.join()
    return cluster


def _print_readings(result: PollResult, requests: object = None) -> None:
    """Print one poll's outcome as a table for an operator adding a device; `requests` is
    what the poll cost in requests (PDUs, HTTP requests), when the driver counts them."""
    if not result.success or result.data is None:
        print(f"{result.target}: DOWN ({result.reason}): {result.message}")
        return
    info = result.data.info
    cost = f", {requests} requests" if isinstance(requests, int) else ""
    print(f"{result.target}: up in {result.duration_seconds * 1000:.0f} ms{cost}")
    print(
        f"  profile {info.profile}, vendor {info.vendor!r}, model {info.model!r}, "
        f"firmware {info.firmware!r}, protocol {info.protocol}"
    )
    print(f"  {'quantity':<18} {'sensor':<32} {'location':<9} {'limit':<14} value")
    for r in result.data.readings:
        value = r.state if r.state is not None else f"{r.value:g}"
        extra = f" ({r.hw_type})" if r.hw_type is not None else ""
        print(
            f"  {r.quantity:<18} {r.sensor[:32]:<32} {r.location or '':<9} "
            f"{r.limit_type or '':<14} {value}{extra}"
        )
    for problem in result.data.partial_errors:
        print(f"  partial: {problem}")


async def probe(config: Config, profiles: ProfileSet, names: Sequence[str]) -> int:
    """Poll the named targets (all when none named) once and print what was read."""
    targets = [t for t in config.targets if not names or t.name in names]
    missing = set(names) - {t.name for t in targets}
    if missing:
        print(f"no such target: {', '.join(sorted(missing))}", file=sys.stderr)
        return 2
    store = Store()
    context = DriverContext(profiles, config.settings)
    failed = 0
    for target in targets:
        store.register(target.name, target.protocol, target.labels, target.sensor_label_rules())
        spec = PollSpec.from_config(config, target)
        runner = TargetRunner(spec, {}, driver_for(spec, context), store, 0, 0)
        result = await runner.poll_once()
        requests = getattr(runner.driver, "requests_last_poll", None)
        await runner.driver.close()
        _print_readings(result, requests)
        failed += not result.success
    context.shutdown()
    return 1 if failed else 0
