"""Shared test setup: every test gets its own workspace, and torch uses the machine's two cores."""
import pytest
import torch


@pytest.fixture(autouse=True)
def vgsme_home(tmp_path, monkeypatch):
    """Point $VGSME_HOME at a fresh folder so that no test reads or writes the real workspace."""
    home = tmp_path / "vgsme-home"
    home.mkdir()
    monkeypatch.setenv("VGSME_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


torch.set_num_threads(2)


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test (tiny training runs: threads only add scheduling noise), restored after.
    Test modules that train use it with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def dask_scheduler():
    """One Dask LocalCluster per test module (clusters start slowly), reached by its scheduler address. Its
    nannies set OMP_NUM_THREADS=1 & co. in this process's environment: put back when the module is done."""
    import os

    distributed = pytest.importorskip("distributed")
    from cache.executors import restore_environ

    environ = dict(os.environ)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as c:
        yield c.scheduler_address
    restore_environ(environ)
