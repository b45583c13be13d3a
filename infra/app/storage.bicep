// The storage account of scorefn, reachable with Entra ID only: the Functions host's blobs,
// queues and tables, the Flex deployment package, models and the router config, batch data,
// the prediction/outcome logs, the drift monitoring counts and the batch job queues. Names come
// from main.bicep, which also hands them to the function app's settings (one source for both).

@description('Storage account name (3 to 24 lowercase letters and digits, globally unique).')
param storageAccountName string

@description('Region of the storage account.')
param location string

@description('Tags of the storage account.')
param tags object

@description('Redundancy of the storage account (models, batch data, host state).')
param storageSkuName string

@description('Container of the models and the router config (MODEL_CONTAINER).')
param modelContainerName string

@description('Container of batch inputs, outputs and job records (BATCH_CONTAINER).')
param batchContainerName string

@description('Container of the prediction log (PREDICTION_LOG_CONTAINER).')
param predictionsContainerName string

@description('Container of the outcomes posted for A/B analysis (OUTCOME_LOG_CONTAINER).')
param outcomesContainerName string

@description('Container of the served counts and drift summaries (MONITOR_CONTAINER).')
param monitoringContainerName string

@description('Container of the Flex Consumption deployment package.')
param deploymentContainerName string

@description('Queue of batch jobs (SCORE_QUEUE_NAME).')
param scoreQueueName string

@description('Queue of batch job results (RESULTS_QUEUE_NAME).')
param resultsQueueName string

@description('Where the host moves a job message after maxDequeueCount deliveries (<SCORE_QUEUE_NAME>-poison).')
param poisonQueueName string

@description('Queue of batch job chunks fanned out across instances (CHUNK_QUEUE_NAME).')
param chunkQueueName string

@description('Where the host moves a chunk message after maxDequeueCount deliveries (<CHUNK_QUEUE_NAME>-poison).')
param chunkPoisonQueueName string

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: storageAccountName
  location: location
  tags: tags
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

// Drift monitoring: each instance's served counts (`served/{endpoint}/{hour}/{writer}.json`) and
// the drift evaluation's summaries (`summaries/{endpoint}/`). The app creates it when missing;
// declared here so its name and the app setting come from one place.
resource monitoringContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: monitoringContainerName
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

// Names and endpoints only (never keys). Referencing these outputs makes a deployment wait for
// every container and queue above: the module completes only when all of them exist.
output name string = storage.name
output blobEndpoint string = storage.properties.primaryEndpoints.blob
