"""An overlay logs its mapping changes as one line per interval with counts, not a line per change."""
import asyncio
import logging
from ipaddress import ip_address

from varpd.config.daemon import DaemonSettings, OverlayConfig
from varpd.daemon.change_log import ChangeLog
from varpd.daemon.overlay import OverlayRuntime
from varpd.model import Destination, MappingChange, MappingRecord


def _change(i: int) -> MappingChange:
    rec = MappingRecord(f"02:00:00:00:{i // 256:02x}:{i % 256:02x}", Destination(ip_address("192.0.2.2"), 4789))
    return MappingChange(upserted=(rec,))


def _lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "event=mapping-change" in r.getMessage()]


async def test_a_stream_of_upserts_is_summarised(caplog):
    """2000 changes (an http events stream at full speed) give one line for the first and one
    summary with the counts, not 2000 lines."""
    rt = OverlayRuntime(OverlayConfig(name="vx9", vni=9, search="http",
                                      properties={"vxlan/listen_ip": "192.0.2.1", "http/url": "http://192.0.2.254"}),
                        DaemonSettings())
    rt.validate()
    assert rt.mode == "on-demand"
    caplog.set_level(logging.INFO)
    for i in range(2000):
        await rt._apply_change(_change(i))
    assert _lines(caplog) == ["overlay=vx9 event=mapping-change upserted=1 removed=0"]
    rt._change_log.flush()  # what the interval's timer does
    assert _lines(caplog)[1:] == ["overlay=vx9 event=mapping-change changes=1999 upserted=1999 removed=0 (within 10s)"]


async def test_the_interval_timer_writes_the_summary(caplog):
    caplog.set_level(logging.INFO)
    logger = logging.getLogger("test.change_log")
    cl = ChangeLog(logger, "vx1", interval=0.1)
    cl.add(_change(1))
    cl.add(_change(2))
    cl.add(MappingChange(removed=_change(3).upserted))
    assert len(_lines(caplog)) == 1
    await asyncio.sleep(0.3)
    assert _lines(caplog)[1] == "overlay=vx1 event=mapping-change changes=2 upserted=1 removed=1 (within 0.1s)"
    cl.add(_change(4))  # the interval is over: logged at once
    assert len(_lines(caplog)) == 3
    cl.close()
