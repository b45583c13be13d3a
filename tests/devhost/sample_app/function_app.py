"""A sample v2-model function app for the devhost tests: one app, one blueprint."""

import azure.functions as func
from sample_routes import bp

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_blueprint(bp)
