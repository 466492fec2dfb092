"""Running the app for a class: several app processes behind nginx (class_server), and the
check that tells a browser plainly when a proxy drops the WebSocket upgrade (upgrade_check)."""
