// scorefn on Azure Functions (Flex Consumption, Python 3.11), identity only.
//
// One resource group holds: a storage account (models, batch data, logs, the deployment
// package, the host's own blobs/queues/tables, the batch job queues) reachable with Entra ID
// only; Log Analytics + Application Insights taking Entra ID ingestion only, with a workbook of
// latency and error queries; a user-assigned managed identity the app uses for everything; the
// Flex Consumption plan and function app; and least-privilege role assignments.
//
// Deploy with `azd up`, or `az deployment group create -g RG -f infra/main.bicep -p
// infra/main.parameters.json -p environmentName=NAME` and a zip deploy: see infra/README.md.
// No account keys, connection strings with secrets or instrumentation keys appear in app
// settings or outputs (the Application Insights connection string is an identifier, not a
// secret: see the note at `telemetrySettings`).

targetScope = 'resourceGroup'

// -- parameters ---------------------------------------------------------------------------------

@minLength(1)
@maxLength(16)
@description('Short environment name (letters, digits, hyphens), e.g. dev or prod. Resource names are derived from it and a hash of the resource group, so one resource group can hold several environments.')
param environmentName string

@description('Region of every resource; it must offer Flex Consumption (az functionapp list-flexconsumption-locations). Defaults to the resource group\'s region.')
param location string = resourceGroup().location

@description('Object id of the deploying user or CI principal. When set, it gets data-plane rights to upload models, router configs and batch inputs (Storage Blob Data Contributor) and to submit and read batch jobs (Storage Queue Data Contributor). Empty: no rights granted. azd passes AZURE_PRINCIPAL_ID.')
param principalId string = ''

@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
@description('Kind of principal in principalId: User for a person, ServicePrincipal for a CI identity.')
param principalType string = 'User'

@minValue(40)
@maxValue(1000)
@description('Most instances the app scales out to (Flex Consumption scaleAndConcurrency.maximumInstanceCount, 40 to 1000: lower caps are a preview of a few regions). Caps cost and the load put on storage.')
param maximumInstanceCount int = 40

@allowed([
  512
  2048
  4096
])
@description('Memory of each instance in MB (Flex Consumption instanceMemoryMB). The model cache is bounded to a quarter of it.')
param instanceMemoryMB int = 2048

@minValue(0)
@maxValue(20)
@description('Always-ready instances for the HTTP functions (billed while idle); 0 scales to zero and accepts cold starts.')
param alwaysReadyHttpInstances int = 0

@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
@description('Redundancy of the storage account (models, batch data, host state).')
param storageSkuName string = 'Standard_LRS'

@minValue(30)
@maxValue(730)
@description('Days Log Analytics keeps telemetry (30 is included in the price).')
param logRetentionDays int = 30

@description('Path of the router config blob inside the models container. A missing blob means no routing: endpoint NAME is served by model NAME.')
param routerConfigBlob string = 'config/router.json'

@description('Extra or changed scorefn app settings (tuning such as PREDICT_MAX_THREADS or TELEMETRY_LOG_PAYLOADS), as {"NAME": "value"}. They cannot replace the identity, storage, queue or telemetry settings. Never put secrets here.')
param appSettingOverrides object = {}

@description('Tags added to every resource.')
param tags object = {}

// -- names ---------------------------------------------------------------------------------------

var resourceToken = toLower(uniqueString(resourceGroup().id, environmentName, location))
var envSlug = toLower(environmentName)
var allTags = union(tags, {
  'azd-env-name': environmentName
  application: 'scorefn'
})

var identityName = 'id-${envSlug}-${resourceToken}'
var storageAccountName = 'st${resourceToken}'
var logAnalyticsName = 'log-${envSlug}-${resourceToken}'
var appInsightsName = 'appi-${envSlug}-${resourceToken}'
var planName = 'plan-${envSlug}-${resourceToken}'
var functionAppName = 'func-${envSlug}-${resourceToken}'

// Blob containers. Each name is also the app setting that points the code at it.
var modelContainerName = 'models' // MODEL_CONTAINER; also holds the router config blob
var batchContainerName = 'batch' // BATCH_CONTAINER: batch inputs, outputs, job records
var predictionsContainerName = 'predictions' // PREDICTION_LOG_CONTAINER: the prediction log
var outcomesContainerName = 'outcomes' // OUTCOME_LOG_CONTAINER: outcomes posted for A/B analysis
var deploymentContainerName = 'app-package-${resourceToken}' // the Flex deployment package

// Queues: the queue trigger binds %SCORE_QUEUE_NAME%; after maxDequeueCount deliveries the host
// moves a message to <queue>-poison.
var scoreQueueName = 'score-requests' // SCORE_QUEUE_NAME
var resultsQueueName = 'score-results' // RESULTS_QUEUE_NAME
var poisonQueueName = '${scoreQueueName}-poison'
// Chunks of batch jobs fanned out across instances: the chunk trigger binds %CHUNK_QUEUE_NAME%,
// a second trigger %CHUNK_QUEUE_NAME%-poison (a chunk that exhausted its retries fails its job).
var chunkQueueName = 'score-chunks' // CHUNK_QUEUE_NAME
var chunkPoisonQueueName = '${chunkQueueName}-poison'

// Built-in role definitions (ids are the same in every tenant).
var roles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
}

// -- identity ------------------------------------------------------------------------------------

// The one identity of the app: host storage, deployment package, models, queues, telemetry.
// User-assigned, so role assignments exist before the app first starts and survive re-creation.
resource appIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: identityName
  location: location
  tags: allTags
}

// -- storage -------------------------------------------------------------------------------------

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: storageAccountName
  location: location
  tags: allTags
  kind: 'StorageV2'
  sku: {
    name: storageSkuName
  }
  properties: {
    accessTier: 'Hot'
    allowSharedKeyAccess: false // Entra ID only: no account keys, no SAS signed with them
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled' // Flex Consumption without VNet integration reaches it publicly
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    // Overwritten or deleted models and data can be recovered for 7 days.
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource modelContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: modelContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource batchContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: batchContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource predictionsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: predictionsContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource outcomesContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: outcomesContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource scoreQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: scoreQueueName
}

resource resultsQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: resultsQueueName
}

resource poisonQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: poisonQueueName
}

resource chunkQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: chunkQueueName
}

resource chunkPoisonQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: chunkPoisonQueueName
}

// -- monitoring ----------------------------------------------------------------------------------

resource logAnalytics 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: logAnalyticsName
  location: location
  tags: allTags
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
  tags: allTags
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
    query: loadTextContent('queries/latency_percentiles.kql')
    visualization: 'table'
  }
  {
    name: 'latency-timechart'
    title: 'HTTP scoring latency over time (p50/p95/p99)'
    query: loadTextContent('queries/latency_timechart.kql')
    visualization: 'timechart'
  }
  {
    name: 'error-rate'
    title: 'HTTP scoring error rate per endpoint, with error codes'
    query: loadTextContent('queries/error_rate.kql')
    visualization: 'table'
  }
  {
    name: 'metrics-by-variant'
    title: 'Scorings, mean/max latency and error rate per trigger, endpoint, variant, model version (metrics)'
    query: loadTextContent('queries/metrics_by_variant.kql')
    visualization: 'table'
  }
  {
    name: 'shadow-difference'
    title: 'Shadow variants: prediction difference, latency, failures'
    query: loadTextContent('queries/shadow_difference.kql')
    visualization: 'table'
  }
  {
    name: 'model-loads'
    title: 'Cold model loads per model version'
    query: loadTextContent('queries/model_loads.kql')
    visualization: 'table'
  }
  {
    name: 'model-refresh-failures'
    title: 'Failed background model refreshes (the cached version kept serving)'
    query: loadTextContent('queries/model_refresh_failures.kql')
    visualization: 'table'
  }
  {
    name: 'log-dropped'
    title: 'Prediction log records dropped, per endpoint and reason'
    query: loadTextContent('queries/log_dropped.kql')
    visualization: 'table'
  }
  {
    name: 'invocations'
    title: 'Function invocations per result code (Functions host telemetry)'
    query: loadTextContent('queries/invocations.kql')
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
  tags: allTags
  kind: 'shared'
  properties: {
    displayName: 'scorefn latency and errors (${environmentName})'
    category: 'workbook'
    sourceId: appInsights.id
    serializedData: string(workbookContent)
  }
}

// -- function app --------------------------------------------------------------------------------

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: allTags
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
  PREDICTION_LOG_CONNECTION: 'AzureWebJobsStorage'
  PREDICTION_LOG_CONTAINER: predictionsContainerName
  OUTCOME_LOG_CONTAINER: outcomesContainerName
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
  tags: union(allTags, {
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
        version: '3.11'
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
  dependsOn: [
    // The host reads its storage and the package with the identity from its first start.
    hostBlobOwner
    hostQueueContributor
    hostTableContributor
    telemetryPublisher
    deploymentContainer
    scoreQueue
    chunkQueue
    chunkPoisonQueue
  ]
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

// -- role assignments ----------------------------------------------------------------------------
// All data-plane rights of the app go to its user-assigned identity; nothing gets management
// rights. Scope: the storage account (or Application Insights), the smallest scope the host
// accepts.

// Storage Blob Data Owner: the Functions host needs it on its AzureWebJobsStorage account (it
// creates its containers, keeps keys and leases in blobs, reads the Flex deployment package).
// It also covers what scorefn does with blobs: read models and the router config, write batch
// outputs, job records and the prediction/outcome logs (append blobs), so no separate Blob Data
// Contributor is assigned to the app.
resource hostBlobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appIdentity.id, roles.storageBlobDataOwner)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
    principalId: appIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// Storage Queue Data Contributor: the queue trigger peeks, dequeues, updates (a failed message
// goes back with a new visibility timeout) and deletes messages, creates and writes the poison
// queue; scorefn sends job results (and creates the results queue if it is missing). Reader +
// Message Processor cannot update messages or create queues; Contributor is the smallest
// built-in role that covers all of it.
resource hostQueueContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appIdentity.id, roles.storageQueueDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
    principalId: appIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// Storage Table Data Contributor: the host persists its diagnostic events in table storage of
// AzureWebJobsStorage (AzureWebJobsStorage__tableServiceUri); scorefn itself uses no tables.
resource hostTableContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appIdentity.id, roles.storageTableDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor)
    principalId: appIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// Monitoring Metrics Publisher on Application Insights: with DisableLocalAuth, the only way for
// the exporter and the host to ingest telemetry (all kinds, despite the role's name).
resource telemetryPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, appIdentity.id, roles.monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: appIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// Optional, for the deploying user (principalId): Storage Blob Data Contributor to upload models
// and router configs (`python -m scorefn upload-model ... --account-url`, az storage blob upload
// --auth-mode login), upload batch inputs and read outputs. Not Owner: no ACL/ownership rights.
resource userBlobContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(principalId)) {
  name: guid(storage.id, principalId, roles.storageBlobDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: principalId
    principalType: principalType
  }
}

// Optional, for the deploying user: Storage Queue Data Contributor, because `python -m scorefn
// jobs submit` creates the job queue when needed and sends to it, and `jobs wait` peeks at,
// receives and deletes result messages (Message Sender alone cannot create or read a queue).
resource userQueueContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(principalId)) {
  name: guid(storage.id, principalId, roles.storageQueueDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
    principalId: principalId
    principalType: principalType
  }
}

// -- outputs (names and URLs only: nothing here is a secret) -------------------------------------

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_FUNCTION_APP_NAME string = functionApp.name
output AZURE_FUNCTION_APP_URL string = 'https://${functionApp.properties.defaultHostName}'
output AZURE_STORAGE_ACCOUNT_NAME string = storage.name
output AZURE_STORAGE_BLOB_ENDPOINT string = storage.properties.primaryEndpoints.blob
output MODEL_CONTAINER string = modelContainerName
output BATCH_CONTAINER string = batchContainerName
output PREDICTIONS_CONTAINER string = predictionsContainerName
output OUTCOMES_CONTAINER string = outcomesContainerName
output ROUTER_CONFIG_BLOB string = routerConfigBlob
output SCORE_QUEUE_NAME string = scoreQueueName
output RESULTS_QUEUE_NAME string = resultsQueueName
output POISON_QUEUE_NAME string = poisonQueueName
output CHUNK_QUEUE_NAME string = chunkQueueName
output APPLICATIONINSIGHTS_NAME string = appInsights.name
output AZURE_WORKBOOK_ID string = workbook.id
output AZURE_APP_IDENTITY_CLIENT_ID string = appIdentity.properties.clientId
