"""Azure Functions entry point (Python v2 programming model): registers blueprints, nothing else.

HTTP routes default to function-level auth (a key in ``x-functions-key`` or ``?code=``);
the health probes opt out explicitly in their blueprint.
"""

import azure.functions as func

from score_function.http_routes import bp as http_routes
from score_function.monitor_timer import bp as monitor_timer
from score_function.queue_jobs import bp as queue_jobs
from score_function.rollout_timer import bp as rollout_timer

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_blueprint(http_routes)
app.register_blueprint(queue_jobs)
app.register_blueprint(rollout_timer)
app.register_blueprint(monitor_timer)
