"""DriftRepair decides from one event whether the kernel still holds what the overlay wants."""
import asyncio
import collections
from ipaddress import ip_address as ip

from varpd.daemon.drift import DriftRepair, Resync
from varpd.tasks import TaskSet
from varpd_kmod.types import FdbChange, FdbEntry, NeighChange, NeighEntry

A = FdbEntry("02:14:00:00:00:01", ip("192.0.2.2"), 4789)
Z1, Z2 = (FdbEntry("00:00:00:00:00:00", ip(f"192.0.2.{i}"), 4789) for i in (1, 2))
NA = NeighEntry(ip("10.14.0.1"), A.mac)


class FakeTables:
    closed = False
    dev_port = 4789

    def __init__(self):
        self.calls = []

    async def add_fdb(self, entries):
        self.calls.append(("add_fdb", sorted(entries, key=str)))
        return []

    async def take_fdb(self, entries):
        self.calls.append(("take_fdb", sorted(entries, key=str)))
        return []

    async def add_neigh(self, entries):
        self.calls.append(("add_neigh", list(entries)))
        return []


def run(events, fdb=None, neigh=None):
    fdb = {A.mac: [A], Z1.mac: [Z1, Z2]} if fdb is None else fdb
    neigh = {NA.ip: NA} if neigh is None else neigh
    tables = FakeTables()

    async def go():
        tasks = TaskSet()
        counters = collections.Counter()
        repair = DriftRepair("vx", tasks, lambda: tables, lambda mac: fdb.get(mac, ()), neigh.get, counters,
                             lambda failures: None)
        for ev in events:
            repair.on_change(ev)
        await asyncio.sleep(0.01)
        await tasks.cancel_all()
        return counters["drift_repairs"]

    return tables.calls, asyncio.run(go())


def fdb_ev(e, *, deleted=False, owned=True, port=0):
    return FdbChange(1, e.mac, e.dst, port, deleted, owned)


def test_own_programming_is_ignored():
    calls, n = run([fdb_ev(A), fdb_ev(A, port=4789), fdb_ev(Z2), NeighChange(1, NA.ip, NA.mac, False, True)])
    assert calls == [] and n == 0


def test_changes_to_keys_not_wanted_are_ignored():
    other = FdbEntry("02:14:00:00:00:99", ip("192.0.2.9"), 4789)
    calls, _ = run([fdb_ev(other, deleted=True), fdb_ev(other, owned=False),
                    NeighChange(1, ip("10.14.0.99"), None, True, False)])
    assert calls == []


def test_a_deleted_entry_is_put_back():
    calls, n = run([fdb_ev(A, deleted=True), NeighChange(1, NA.ip, None, True, True)])
    assert calls == [("add_fdb", [A]), ("add_neigh", [NA])] and n == 2


def test_a_deleted_flood_remote_is_appended_again_with_the_rest():
    calls, _ = run([fdb_ev(Z2, deleted=True)])
    assert calls == [("add_fdb", [Z1, Z2])]


def test_an_entry_changed_by_someone_else_is_taken_back():
    theirs = FdbEntry(A.mac, ip("192.0.2.66"), 4789)
    calls, _ = run([fdb_ev(theirs, owned=False), NeighChange(1, NA.ip, "02:14:00:00:00:66", False, False)])
    assert calls == [("take_fdb", [A]), ("add_neigh", [NA])]


def test_a_marked_entry_with_another_destination_is_replaced():
    calls, _ = run([fdb_ev(FdbEntry(A.mac, ip("192.0.2.66"), 4789))])
    assert calls == [("add_fdb", [A])]


def test_a_burst_is_one_batch_and_the_wanted_state_is_read_at_send_time():
    fdb = {A.mac: [A]}
    events = [fdb_ev(A, deleted=True)] * 50
    calls, _ = run(events, fdb=fdb)
    assert calls == [("add_fdb", [A])]


def test_resync_coalesces_requests():
    runs = []

    async def go():
        tasks = TaskSet()
        gate = asyncio.Event()

        async def full_pass():
            runs.append(1)
            await gate.wait()

        rs = Resync(tasks, full_pass)
        rs.request()
        await asyncio.sleep(0)
        for _ in range(10):  # ten ENOBUFS while the first pass runs
            rs.request()
        gate.set()
        await asyncio.sleep(0.01)
        await tasks.cancel_all()

    asyncio.run(go())
    assert len(runs) == 2  # the first, and exactly one more


def test_push_answers_per_key_what_wanted_lists():
    """Drift repair asks a strategy per key: its answers agree with the whole wanted state."""
    from types import SimpleNamespace

    from varpd.daemon.modes.push import PushMode
    from varpd.model import Destination, Mapping, MappingRecord

    local = Destination(ip("192.0.2.1"), 4789)
    recs = [MappingRecord(f"02:14:00:00:01:{i:02x}", Destination(ip(f"192.0.2.{10 + i}"), 4789),
                          arp=ip(f"10.14.1.{i + 1}"), ndp=ip(f"fe80::14:{i + 1}")) for i in range(20)]
    recs.append(MappingRecord("02:14:00:00:02:01", local, arp=ip("10.14.2.1")))  # a local VNIC: never wanted
    mapping = Mapping.of(recs)
    rt = SimpleNamespace(local=local, name="vx", backend=SimpleNamespace(snapshot=lambda: mapping))
    mode = PushMode(rt)
    mode.load(mapping)
    fdb, neigh = (list(x) for x in mode.wanted())
    assert len(fdb) == 20 and len(neigh) == 40
    assert all(mode.want_fdb(e.mac) == (e,) for e in fdb)
    assert all(mode.want_neigh(n.ip) == n for n in neigh)
    assert mode.want_neigh(ip("10.14.2.1")) is None and mode.want_fdb("02:14:00:00:02:01") == ()
    assert mode.want_neigh(ip("10.14.9.9")) is None
