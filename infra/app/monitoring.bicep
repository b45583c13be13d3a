// Monitoring of scorefn: a Log Analytics workspace, Application Insights taking Entra ID
// ingestion only, the workbook of latency and error queries (the KQL in infra/queries/), and the
// two drift alerts (log alert rules running infra/queries/drift_max_psi.kql and
// infra/queries/drift_drifted_features.kql).

@description('Log Analytics workspace name.')
param logAnalyticsName string

@description('Application Insights component name.')
param appInsightsName string

@description('Region of the monitoring resources.')
param location string

@description('Tags of the monitoring resources.')
param tags object

@description('Days Log Analytics keeps telemetry (30 is included in the price).')
param logRetentionDays int

@description('Environment name: the workbook\'s name is derived from it and its title shows it.')
param environmentName string

@description('Name of the drift alert rule (PSI at or over driftPsiAlertThreshold).')
param driftAlertName string

@description('Name of the drifted-features alert rule (any feature flagged as drifted).')
param driftedFeaturesAlertName string

@description('Population stability index (a decimal as a string: Bicep has no decimal literals) at or over which the drift alert fires for an endpoint and variant.')
param driftPsiAlertThreshold string

@description('Resource id of an action group both drift alerts notify; empty: none (the alerts show in the portal only).')
param driftAlertActionGroupId string

resource logAnalytics 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: logAnalyticsName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: logRetentionDays
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: appInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logAnalytics.id
    IngestionMode: 'LogAnalytics'
    // Entra ID ingestion only: telemetry is accepted only with a token of an identity holding
    // Monitoring Metrics Publisher; the instrumentation key alone can no longer send anything.
    DisableLocalAuth: true
    publicNetworkAccessForIngestion: 'Enabled'
    publicNetworkAccessForQuery: 'Enabled'
  }
}

// Latency and error dashboards. The KQL lives once, in infra/queries/*.kql (runnable as is in
// Logs); the workbook loads it at build time and applies its TimeRange parameter to each query.
var workbookQueries = [
  {
    name: 'latency-percentiles'
    title: 'HTTP scoring latency: exact p50/p95/p99 from the request spans, per endpoint and model version'
    query: loadTextContent('../queries/latency_percentiles.kql')
    visualization: 'table'
  }
  {
    name: 'latency-timechart'
    title: 'HTTP scoring latency over time (p50/p95/p99)'
    query: loadTextContent('../queries/latency_timechart.kql')
    visualization: 'timechart'
  }
  {
    name: 'error-rate'
    title: 'HTTP scoring error rate per endpoint, with error codes'
    query: loadTextContent('../queries/error_rate.kql')
    visualization: 'table'
  }
  {
    name: 'metrics-by-variant'
    title: 'Scorings, mean/max latency and error rate per trigger, endpoint, variant, model version (metrics)'
    query: loadTextContent('../queries/metrics_by_variant.kql')
    visualization: 'table'
  }
  {
    name: 'shadow-difference'
    title: 'Shadow variants: prediction difference, latency, failures'
    query: loadTextContent('../queries/shadow_difference.kql')
    visualization: 'table'
  }
  {
    name: 'model-loads'
    title: 'Cold model loads per model version'
    query: loadTextContent('../queries/model_loads.kql')
    visualization: 'table'
  }
  {
    name: 'model-refresh-failures'
    title: 'Failed background model refreshes (the cached version kept serving)'
    query: loadTextContent('../queries/model_refresh_failures.kql')
    visualization: 'table'
  }
  {
    name: 'drift-max-psi'
    title: 'Drift: the most drifted feature\'s PSI per evaluation, endpoint, variant and baseline'
    query: loadTextContent('../queries/drift_max_psi.kql')
    visualization: 'table'
  }
  {
    name: 'drift-drifted-features'
    title: 'Drift: features flagged as drifted (PSI, missing or out-of-range jumps) per evaluation, endpoint, variant and baseline'
    query: loadTextContent('../queries/drift_drifted_features.kql')
    visualization: 'table'
  }
  {
    name: 'log-dropped'
    title: 'Prediction log records dropped, per endpoint and reason'
    query: loadTextContent('../queries/log_dropped.kql')
    visualization: 'table'
  }
  {
    name: 'invocations'
    title: 'Function invocations per result code (Functions host telemetry)'
    query: loadTextContent('../queries/invocations.kql')
    visualization: 'table'
  }
]

var workbookQueryItems = [for q in workbookQueries: {
  type: 3
  name: q.name
  content: {
    version: 'KqlItem/1.0'
    title: q.title
    query: q.query
    size: 0
    timeContextFromParameter: 'TimeRange'
    queryType: 0
    resourceType: 'microsoft.insights/components'
    visualization: q.visualization
  }
}]

var workbookHeaderItems = [
  {
    type: 1
    name: 'intro'
    content: {
      json: '## scorefn: latency and errors\nPercentiles come from the `scorefn.score` request spans (exact durations). Per-variant means, maxima and error rates come from the OpenTelemetry metrics, which Azure Monitor receives as count/sum/min/max aggregates (no buckets, so no percentiles there). Queries: `infra/queries/*.kql`.'
    }
  }
  {
    type: 9
    name: 'parameters'
    content: {
      version: 'KqlParameterItem/1.0'
      parameters: [
        {
          id: 'time-range'
          version: 'KqlParameterItem/1.0'
          name: 'TimeRange'
          label: 'Time range'
          type: 4
          isRequired: true
          value: {
            durationMs: 86400000
          }
          typeSettings: {
            selectableValues: [
              {
                durationMs: 3600000
              }
              {
                durationMs: 14400000
              }
              {
                durationMs: 86400000
              }
              {
                durationMs: 604800000
              }
            ]
            allowCustom: true
          }
        }
      ]
      style: 'pills'
      queryType: 0
      resourceType: 'microsoft.insights/components'
    }
  }
]

var workbookContent = {
  version: 'Notebook/1.0'
  items: concat(workbookHeaderItems, workbookQueryItems)
  fallbackResourceIds: [
    appInsights.id
  ]
  '$schema': 'https://github.com/Microsoft/Application-Insights-Workbooks/blob/master/schema/workbook.json'
}

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(resourceGroup().id, environmentName, 'scorefn-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 'scorefn latency and errors (${environmentName})'
    category: 'workbook'
    sourceId: appInsights.id
    serializedData: string(workbookContent)
  }
}

// Drift alert: a log alert on Application Insights (its customMetrics, the schema the queries use)
// running the workbook's drift query; it fires for each endpoint and variant whose
// `scorefn.drift.max_psi` (the most drifted feature's PSI, against any baseline) reached
// driftPsiAlertThreshold in the last two hours. Evaluated hourly, so with the default
// MONITOR_SCHEDULE (hourly) each window holds one or two drift evaluations. It resolves itself
// once an evaluation window has no value at or over the threshold. Without an action group it
// notifies no one: fired alerts show in the portal (Monitor > Alerts).
resource driftAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: driftAlertName
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'scorefn drift (${environmentName})'
    description: 'A feature of an endpoint and variant drifted: scorefn.drift.max_psi at or over ${driftPsiAlertThreshold} (docs/monitoring.md).'
    severity: 2
    enabled: true
    scopes: [
      appInsights.id
    ]
    evaluationFrequency: 'PT1H'
    windowSize: 'PT2H'
    criteria: {
      allOf: [
        {
          query: loadTextContent('../queries/drift_max_psi.kql')
          timeAggregation: 'Maximum'
          metricMeasureColumn: 'max_psi'
          operator: 'GreaterThanOrEqual'
          threshold: json(driftPsiAlertThreshold) // a number: 0.2 is not a Bicep literal
          dimensions: [
            {
              name: 'endpoint'
              operator: 'Include'
              values: [
                '*'
              ]
            }
            {
              name: 'variant'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: empty(driftAlertActionGroupId) ? [] : [
        driftAlertActionGroupId
      ]
    }
  }
}

// Drifted-features alert: the same schedule, window and action group, on
// `scorefn.drift.drifted_features` (features the evaluation flagged: PSI over
// MONITOR_PSI_THRESHOLD with enough rows, or a significant jump of a feature's missing or
// out-of-range rate); it fires for each endpoint and variant with any flagged feature in the
// window. Against a model's training ranges (a model uploaded without a reference profile) PSI is
// always 0, so a unit change or a feature gone missing there shows only here. It also fires along
// with the PSI alert (a feature over the PSI threshold is counted); severity 3, as it is broader.
resource driftedFeaturesAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: driftedFeaturesAlertName
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'scorefn drifted features (${environmentName})'
    description: 'Features of an endpoint and variant were flagged as drifted (PSI, or a jump of missing or out-of-range values): scorefn.drift.drifted_features over 0 (docs/monitoring.md).'
    severity: 3
    enabled: true
    scopes: [
      appInsights.id
    ]
    evaluationFrequency: 'PT1H'
    windowSize: 'PT2H'
    criteria: {
      allOf: [
        {
          query: loadTextContent('../queries/drift_drifted_features.kql')
          timeAggregation: 'Maximum'
          metricMeasureColumn: 'drifted_features'
          operator: 'GreaterThan'
          threshold: 0
          dimensions: [
            {
              name: 'endpoint'
              operator: 'Include'
              values: [
                '*'
              ]
            }
            {
              name: 'variant'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: empty(driftAlertActionGroupId) ? [] : [
        driftAlertActionGroupId
      ]
    }
  }
}

// Names and ids only: the connection string is read where it is used (the function app's
// settings), so no deployment record holds it.
output appInsightsName string = appInsights.name
output workbookId string = workbook.id
