// The Flex Consumption plan and the function app of scorefn (Python 3.13), its app settings and
// its publishing policies. Storage, Application Insights and the identity are declared elsewhere
// (storage.bicep, monitoring.bicep, main.bicep) and referenced here by name; main.bicep deploys
// this module after the role assignments (rbac.bicep), the containers and the queues exist.

@description('Flex Consumption plan name.')
param planName string

@description('Function app name.')
param functionAppName string

@description('Region of the plan and the app.')
param location string

@description('Tags of the plan and the app (the app adds azd-service-name).')
param tags object

@description('User-assigned managed identity the app runs as.')
param identityName string

@description('Storage account of the host, the deployment package, models, batch data and logs.')
param storageAccountName string

@description('Application Insights component the app sends telemetry to.')
param appInsightsName string

@description('Container of the Flex Consumption deployment package.')
param deploymentContainerName string

@description('MODEL_CONTAINER: models and the router config blob.')
param modelContainerName string

@description('BATCH_CONTAINER: batch inputs, outputs, job records.')
param batchContainerName string

@description('PREDICTION_LOG_CONTAINER: the prediction log.')
param predictionsContainerName string

@description('OUTCOME_LOG_CONTAINER: outcomes posted for A/B analysis.')
param outcomesContainerName string

@description('MONITOR_CONTAINER: served counts and drift summaries (on PREDICTION_LOG_CONNECTION).')
param monitoringContainerName string

@description('SCORE_QUEUE_NAME: the queue of batch jobs.')
param scoreQueueName string

@description('RESULTS_QUEUE_NAME: the queue of batch job results.')
param resultsQueueName string

@description('CHUNK_QUEUE_NAME: the queue of batch job chunks.')
param chunkQueueName string

@description('ROLLOUT_SCHEDULE: when the rollout controller runs (NCRONTAB, six fields).')
param rolloutSchedule string = '0 */5 * * * *'

@description('MONITOR_SCHEDULE: when the drift evaluation runs (NCRONTAB, six fields; default ten minutes past every hour).')
param monitorSchedule string = '0 10 * * * *'

@description('ROUTER_CONFIG_BLOB: path of the router config blob inside the models container.')
param routerConfigBlob string

@description('Most instances the app scales out to (validated in main.bicep).')
param maximumInstanceCount int

@description('Memory of each instance in MB (validated in main.bicep).')
param instanceMemoryMB int

@description('Always-ready instances for the HTTP functions (validated in main.bicep).')
param alwaysReadyHttpInstances int

@description('Extra or changed scorefn app settings; they cannot replace the identity, storage, queue or telemetry settings.')
param appSettingOverrides object

resource appIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' existing = {
  name: identityName
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true // Linux
  }
}

// Host storage, the model store, the batch queues and the prediction/outcome logs all use the
// identity-based connection AzureWebJobsStorage (MODEL_STORAGE_CONNECTION and
// PREDICTION_LOG_CONNECTION name it): service URIs + the managed identity, no connection string.
var storageSettings = {
  AzureWebJobsStorage__blobServiceUri: storage.properties.primaryEndpoints.blob
  AzureWebJobsStorage__queueServiceUri: storage.properties.primaryEndpoints.queue
  AzureWebJobsStorage__tableServiceUri: storage.properties.primaryEndpoints.table
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: appIdentity.properties.clientId
  MODEL_STORAGE_CONNECTION: 'AzureWebJobsStorage'
  MODEL_CONTAINER: modelContainerName
  BATCH_CONTAINER: batchContainerName
  // No other container is open to batch jobs: job senders act with the app's identity (see README).
  BATCH_ALLOWED_CONTAINERS: ''
  SCORE_QUEUE_NAME: scoreQueueName // the queue trigger binds %SCORE_QUEUE_NAME%: required
  RESULTS_QUEUE_NAME: resultsQueueName
  CHUNK_QUEUE_NAME: chunkQueueName // the chunk triggers bind %CHUNK_QUEUE_NAME%: required
  ROUTER_CONFIG_BLOB: routerConfigBlob
  ROLLOUT_SCHEDULE: rolloutSchedule // the rollout timer binds %ROLLOUT_SCHEDULE%: required
  PREDICTION_LOG_CONNECTION: 'AzureWebJobsStorage'
  PREDICTION_LOG_CONTAINER: predictionsContainerName
  OUTCOME_LOG_CONTAINER: outcomesContainerName
  MONITOR_CONTAINER: monitoringContainerName // on PREDICTION_LOG_CONNECTION, like the logs
  MONITOR_SCHEDULE: monitorSchedule // the drift evaluation timer binds %MONITOR_SCHEDULE%: required
}

// APPLICATIONINSIGHTS_CONNECTION_STRING contains `InstrumentationKey=`: Microsoft documents the
// ikey as an identifier, not a security token or secret, and with DisableLocalAuth the
// ingestion endpoint rejects anything not carrying an Entra ID token of an identity holding
// Monitoring Metrics Publisher. The exporter (and the Functions host) need it to know where to
// send; APPLICATIONINSIGHTS_AUTHENTICATION_STRING makes both authenticate with the app identity.
var telemetrySettings = {
  APPLICATIONINSIGHTS_CONNECTION_STRING: appInsights.properties.ConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'Authorization=AAD;ClientId=${appIdentity.properties.clientId}'
  PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY: 'false' // scorefn configures the exporter itself
}

// Tuning: the code's defaults, written out so the deployed configuration is visible in one
// place; appSettingOverrides changes them. Memory: ~75 MB of process, the model cache (a
// quarter of the instance), and a load in flight (~3x the largest model, an eighth of it).
var tuningSettings = {
  MODEL_REFRESH_SECONDS: '30'
  MODEL_CACHE_MAX_MB: string(instanceMemoryMB / 4)
  MAX_MODEL_MB: string(min(512, instanceMemoryMB / 8))
  MAX_REQUEST_BYTES: '4194304'
  MAX_ROWS_PER_REQUEST: '10000'
  MAX_RESPONSE_VALUES: '2000000'
  PREDICT_PARALLEL_MIN_ROWS: '2000'
  PREDICT_MAX_THREADS: '0'
  STORAGE_TIMEOUT_SECONDS: '20'
  BATCH_CHUNK_ROWS: '50000'
  BATCH_MAX_INPUT_MB: '2048'
  BATCH_FANOUT_BYTES: '67108864' // larger inputs are split into chunks scored across instances
  BATCH_FANOUT_CHUNK_BYTES: '33554432'
  BATCH_FANOUT_CONCURRENCY: '2'
  ROUTER_REFRESH_SECONDS: '30'
  ROUTER_CHECK_MODELS: 'true'
  SHADOW_WORKERS: '2'
  SHADOW_MAX_PENDING: '64'
  PREDICTION_LOG_FLUSH_SECONDS: '5'
  PREDICTION_LOG_MAX_BUFFER: '10000'
  PREDICTION_LOG_MAX_BUFFER_MB: '64'
  TELEMETRY_EXPORT_INTERVAL_SECONDS: '60'
  TELEMETRY_TRACE_SAMPLE_RATIO: '0.05' // metrics are never sampled; a caller's sampled trace is always kept
  TELEMETRY_LOG_PAYLOADS: 'false' // no request features in failure logs
}

// Later arguments of union() win: overrides can tune, never redirect storage or telemetry.
// Not set on purpose: FUNCTIONS_WORKER_RUNTIME and FUNCTIONS_EXTENSION_VERSION (Flex
// Consumption takes the runtime from functionAppConfig.runtime and does not support them),
// AzureWebJobsStorage itself (that would be a connection string).
var appSettings = union(tuningSettings, appSettingOverrides, telemetrySettings, storageSettings)

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: functionAppName
  location: location
  tags: union(tags, {
    'azd-service-name': 'scorefn'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${appIdentity.id}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    publicNetworkAccess: 'Enabled'
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: appIdentity.id
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
        alwaysReady: (alwaysReadyHttpInstances > 0) ? [
          {
            name: 'http'
            instanceCount: alwaysReadyHttpInstances
          }
        ] : []
      }
      runtime: {
        name: 'python'
        version: '3.13'
      }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      // Flex Consumption refuses an FTPS state here (400); FTP is off through the 'ftp'
      // basicPublishingCredentialsPolicies below.
      http20Enabled: true
      appSettings: [for setting in items(appSettings): {
        name: setting.key
        value: setting.value
      }]
    }
  }
}

// Deployments authenticate with Entra ID (azd, func, az CLI); basic-auth publishing is off.
resource scmBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'scm'
  properties: {
    allow: false
  }
}

resource ftpBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'ftp'
  properties: {
    allow: false
  }
}

output name string = functionApp.name
output defaultHostName string = functionApp.properties.defaultHostName
