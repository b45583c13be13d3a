// Least-privilege role assignments of scorefn. All data-plane rights of the app go to its
// user-assigned identity; nothing gets management rights. Scope: the storage account (or
// Application Insights), the smallest scope the host accepts. The resources are declared
// elsewhere (main.bicep, storage.bicep, monitoring.bicep) and referenced here by name.

@description('Storage account the app and the deploying principal get data-plane rights on.')
param storageAccountName string

@description('Application Insights component the app identity publishes telemetry to.')
param appInsightsName string

@description('User-assigned managed identity of the app.')
param identityName string

@description('Object id of the deploying user or CI principal; empty: no rights granted to it.')
param principalId string

@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
@description('Kind of principal in principalId.')
param principalType string

// Built-in role definitions (ids are the same in every tenant).
var roles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource appIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' existing = {
  name: identityName
}

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
// Trust boundary: upload-model also writes the model's compiled trees (`.compiled/` in the models
// container), native code the app loads and runs. Only this principal and the app's identity can
// write there, the same identities that can write models; grant blob write rights on this
// account to no one you would not let deploy code (docs/compiled-trees.md, "Trust boundary").
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
