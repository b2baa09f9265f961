"""collector_paused() must survive being entered again on the same thread while its own count's lock
is held: a collection may start there and run finalizers (a dropped coroutine suspended inside it)."""
import gc
import threading

from varpd import nogc


def test_a_collection_inside_the_count_lock_may_enter_collector_paused_again():
    entered = []

    def on_gc(phase, info):
        if phase == "start":
            with nogc.collector_paused():  # what a finalizer run by this collection may do
                entered.append(True)

    def work():
        with nogc._lock:  # a collection triggered by an allocation while the count is updated
            gc.collect()

    gc.callbacks.append(on_gc)
    try:
        t = threading.Thread(target=work, daemon=True)
        t.start()
        t.join(5)
        assert not t.is_alive(), "collector_paused() deadlocked on its own lock"
    finally:
        gc.callbacks.remove(on_gc)
    assert entered and nogc._depth == 0 and gc.isenabled()
