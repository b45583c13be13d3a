// scorefn on Azure Functions (Flex Consumption, Python 3.13), identity only.
//
// One resource group holds: a storage account (models, batch data, logs, drift monitoring
// counts, the deployment package, the host's own blobs/queues/tables, the batch job queues)
// reachable with Entra ID only; Log Analytics + Application Insights taking Entra ID ingestion
// only, with a workbook of latency, error and drift queries and two drift alerts; a user-assigned
// managed identity the app uses for everything; the Flex Consumption plan and function app; and
// least-privilege role assignments.
//
// This file holds the parameters, the names, the identity and the outputs; the resources are in
// modules under infra/app/ (storage, monitoring, rbac, function-app: see infra/README.md), which
// take names from here and reference each other's resources by name (`existing`).
//
// Deploy with `azd up`, or `az deployment group create -g RG -f infra/main.bicep -p
// infra/main.parameters.json -p environmentName=NAME` and a zip deploy: see infra/README.md.
// No account keys, connection strings with secrets or instrumentation keys appear in app
// settings or outputs, the modules' included (the Application Insights connection string is an
// identifier, not a secret: see the note at `telemetrySettings` in app/function-app.bicep).

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

@description('Drift alert threshold: the alert fires for an endpoint and variant when its most drifted feature\'s population stability index (the scorefn.drift.max_psi metric) is at or over it. A decimal as a string (Bicep has no decimal literals); 0.2 is the usual "significant shift" level and MONITOR_PSI_THRESHOLD\'s default.')
param driftPsiAlertThreshold string = '0.2'

@description('Resource id of an existing action group (e-mail, webhook, ...) both drift alerts (PSI, drifted features) notify. Empty: no action, fired alerts show in the portal (Monitor > Alerts) only.')
param driftAlertActionGroupId string = ''

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
var driftAlertName = 'alert-drift-${envSlug}-${resourceToken}'
var driftedFeaturesAlertName = 'alert-drifted-features-${envSlug}-${resourceToken}'

// Blob containers. Each name is also the app setting that points the code at it.
var modelContainerName = 'models' // MODEL_CONTAINER; also holds the router config blob
var batchContainerName = 'batch' // BATCH_CONTAINER: batch inputs, outputs, job records
var predictionsContainerName = 'predictions' // PREDICTION_LOG_CONTAINER: the prediction log
var outcomesContainerName = 'outcomes' // OUTCOME_LOG_CONTAINER: outcomes posted for A/B analysis
var monitoringContainerName = 'monitoring' // MONITOR_CONTAINER: served counts, drift summaries
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

// -- identity ------------------------------------------------------------------------------------

// The one identity of the app: host storage, deployment package, models, queues, telemetry.
// User-assigned, so role assignments exist before the app first starts and survive re-creation.
resource appIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: identityName
  location: location
  tags: allTags
}

// -- modules -------------------------------------------------------------------------------------
// Deployment names carry resourceToken: environments sharing a resource group do not overwrite
// each other's deployment records.

module storage 'app/storage.bicep' = {
  name: 'storage-${resourceToken}'
  params: {
    storageAccountName: storageAccountName
    location: location
    tags: allTags
    storageSkuName: storageSkuName
    modelContainerName: modelContainerName
    batchContainerName: batchContainerName
    predictionsContainerName: predictionsContainerName
    outcomesContainerName: outcomesContainerName
    monitoringContainerName: monitoringContainerName
    deploymentContainerName: deploymentContainerName
    scoreQueueName: scoreQueueName
    resultsQueueName: resultsQueueName
    poisonQueueName: poisonQueueName
    chunkQueueName: chunkQueueName
    chunkPoisonQueueName: chunkPoisonQueueName
  }
}

module monitoring 'app/monitoring.bicep' = {
  name: 'monitoring-${resourceToken}'
  params: {
    logAnalyticsName: logAnalyticsName
    appInsightsName: appInsightsName
    location: location
    tags: allTags
    logRetentionDays: logRetentionDays
    environmentName: environmentName
    driftAlertName: driftAlertName
    driftedFeaturesAlertName: driftedFeaturesAlertName
    driftPsiAlertThreshold: driftPsiAlertThreshold
    driftAlertActionGroupId: driftAlertActionGroupId
  }
}

module rbac 'app/rbac.bicep' = {
  name: 'rbac-${resourceToken}'
  params: {
    storageAccountName: storage.outputs.name
    appInsightsName: monitoring.outputs.appInsightsName
    identityName: appIdentity.name
    principalId: principalId
    principalType: principalType
  }
}

module functionApp 'app/function-app.bicep' = {
  name: 'function-app-${resourceToken}'
  params: {
    planName: planName
    functionAppName: functionAppName
    location: location
    tags: allTags
    identityName: appIdentity.name
    storageAccountName: storage.outputs.name // after every container and queue exists
    appInsightsName: monitoring.outputs.appInsightsName
    deploymentContainerName: deploymentContainerName
    modelContainerName: modelContainerName
    batchContainerName: batchContainerName
    predictionsContainerName: predictionsContainerName
    outcomesContainerName: outcomesContainerName
    monitoringContainerName: monitoringContainerName
    scoreQueueName: scoreQueueName
    resultsQueueName: resultsQueueName
    chunkQueueName: chunkQueueName
    routerConfigBlob: routerConfigBlob
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    alwaysReadyHttpInstances: alwaysReadyHttpInstances
    appSettingOverrides: appSettingOverrides
  }
  dependsOn: [
    // The host reads its storage and the package with the identity from its first start: the
    // role assignments exist before the app does.
    rbac
  ]
}

// -- outputs (names and URLs only: nothing here is a secret) -------------------------------------

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output AZURE_FUNCTION_APP_URL string = 'https://${functionApp.outputs.defaultHostName}'
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_STORAGE_BLOB_ENDPOINT string = storage.outputs.blobEndpoint
output MODEL_CONTAINER string = modelContainerName
output BATCH_CONTAINER string = batchContainerName
output PREDICTIONS_CONTAINER string = predictionsContainerName
output OUTCOMES_CONTAINER string = outcomesContainerName
output MONITORING_CONTAINER string = monitoringContainerName
output ROUTER_CONFIG_BLOB string = routerConfigBlob
output SCORE_QUEUE_NAME string = scoreQueueName
output RESULTS_QUEUE_NAME string = resultsQueueName
output POISON_QUEUE_NAME string = poisonQueueName
output CHUNK_QUEUE_NAME string = chunkQueueName
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.appInsightsName
output AZURE_WORKBOOK_ID string = monitoring.outputs.workbookId
output AZURE_APP_IDENTITY_CLIENT_ID string = appIdentity.properties.clientId
