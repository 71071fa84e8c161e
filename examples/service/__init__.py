"""An example FastAPI service built on the data layer: `uvicorn --app-dir examples service.app:app`."""
