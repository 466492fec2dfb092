"""The class pack: finished example runs shipped in the repository, so every page (and the
Lesson) shows a real result before anything has trained.

    build(out=None, full=False, home=None)   train the pack's runs through the engine, export them
    import_pack(store, pack_dir=None)        import them as read-only example runs; returns their ids
    pack_runs(store=None, pack_dir=None)     the pack's runs (key, group, id, config, summary) from its manifest
    read_manifest(pack_dir)                  the pack's manifest (configs, summaries, ids), checked
    samples(pack_dir, dataset, classes)      a few test images (Pixel masks without the dataset)

See spec.py for what it holds and pack.py for the format. No Streamlit here.
"""

from .load import DEFAULT_PACK, example_ids, import_pack, pack_dir_for, pack_runs
from .pack import PackError, pack_size, read_manifest, samples

__all__ = ["DEFAULT_PACK", "PackError", "build", "example_ids", "import_pack", "pack_dir_for", "pack_runs", "pack_size",
           "read_manifest", "samples"]


def build(*args, **kwargs):
    """See builder.build (imported lazily: building needs torch, importing a pack barely). The
    module is not called build.py: importing it would replace this function on the package."""
    from .builder import build as _build
    return _build(*args, **kwargs)
