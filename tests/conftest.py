import pytest

import fusedlearn as fl

ALL_ISAS = ("scalar", "avx2", "avx512")


@pytest.fixture(params=ALL_ISAS)
def isa(request):
    """Run the test once per instruction-set build; skip the ones this CPU lacks."""
    name = request.param
    if name not in fl._C.compiled_isas:
        pytest.skip(f"{name} build not compiled on this platform")
    if name not in fl._C.available_isas():
        pytest.skip(f"this CPU cannot run the {name} build")
    before = fl.get_isa()
    fl.set_isa(name)
    yield name
    fl.set_isa(before)


@pytest.fixture(params=[1, 2])
def threads(request):
    before = fl.get_num_threads()
    fl.set_num_threads(request.param)
    yield request.param
    fl.set_num_threads(before)


@pytest.fixture
def one_thread():
    """One thread for tiny matrices: no OpenMP oversubscription on a shared machine."""
    before = fl.get_num_threads()
    fl.set_num_threads(1)
    yield
    fl.set_num_threads(before)


@pytest.fixture(scope="session")
def digits():
    return fl.data.digits()
