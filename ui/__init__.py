"""What the app's pages share.

- `ui.data`     store → pandas DataFrames (plain functions, no Streamlit)
- `ui.figures`  plotly figure builders: DataFrame in, go.Figure out (no Streamlit)
- `ui.estimate` rough time and cost of a config before it is launched (no Streamlit)
- `ui.backend`  the jobs API as the pages call it (submit, cancel, resume, pump)
- `ui.widgets`  shared Streamlit widgets: the config form, run pickers, the checklist
- `ui.state`    the Streamlit glue: the cached store, selection in the URL, error guards

Pages read the store and draw; they never train.
"""
