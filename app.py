"""Lottery Lab: the Streamlit app. `make run` starts it on http://127.0.0.1:8501.

This script only routes (st.navigation); each page is a short script in pages/.
Pages read the store (engine.store) and hand new runs to engine.jobs; they
never train. The store is `$LOTTERY_HOME`, else cache/ in the project.
"""

import streamlit as st

st.set_page_config(page_title="Lottery Lab", page_icon="🎟️", layout="wide",
                   menu_items={"About": "Lottery Lab: sparse trainable subnetworks with concave mask "
                                        "regularization, compared with iterative magnitude pruning."})

PAGES = {
    "": [st.Page("pages/home.py", title="Home", icon=":material/home:", default=True)],
    "Experiment": [
        st.Page("pages/launch.py", title="Launch", icon=":material/rocket_launch:", url_path="launch"),
        st.Page("pages/runs.py", title="Runs", icon=":material/monitoring:", url_path="runs"),
    ],
    "Analyse": [
        st.Page("pages/masks.py", title="Mask evolution", icon=":material/grid_on:", url_path="masks"),
        st.Page("pages/tradeoffs.py", title="Trade-offs", icon=":material/scatter_plot:", url_path="tradeoffs"),
        st.Page("pages/pixels.py", title="Pixel masks", icon=":material/image:", url_path="pixels"),
    ],
    "Learn": [
        st.Page("pages/lesson.py", title="Lesson", icon=":material/school:", url_path="lesson"),
        st.Page("pages/theory.py", title="Theory", icon=":material/function:", url_path="theory"),
    ],
}

from ui import present  # noqa: E402  (Streamlit and plotly only: no torch import yet)

presenting = present.sync()      # ?present=1, kept across pages
page = st.navigation(PAGES, position="hidden" if presenting else "sidebar")
present.style()

# After st.navigation, so the menu shows before torch is imported. The first view
# of a fresh server waits seconds for that import; the spinner says so (it only
# appears after 0.5 s, so reruns, which import nothing, never show it).
with st.spinner("Loading the engine (PyTorch)…"):
    from ui import identity, md, state  # noqa: E402

state.one_torch_thread()          # the app never computes on a torch thread pool (workers train)

with st.sidebar:
    present.sidebar_toggle()
    st.caption(f"Store: {md.code(state.home())}")
    st.toggle("Show examples", value=True, key=state.SHOW_EXAMPLES,
              help="The class pack's ready-made example runs (badged 📦 example): finished, read-only runs that "
                   "fill every page before anything has trained. Off: every page shows only real runs.")
state.disk_banner()
state.ensure_examples()
if identity.sidebar(presenting):  # who is using it; on a shared server no page shows without an identity
    try:
        page.run()
    except Exception as e:  # noqa: BLE001 - a page error is a message, never a traceback
        state.show_error(e, f"The {page.title} page hit a problem")
state.freeze_imports()
