-- Argo CD health check for kubetune.dev/HPOExperiment.
-- Installed as resource.customizations.health.kubetune.dev_HPOExperiment in argocd-cm
-- (argocd-cm-patch.yaml holds the same text; tests/gitops checks that they agree).
-- Lua 5.1 as Argo CD runs it: no goto, no integer division, no string.format("%q").
local hs = {}
local status = obj.status
local metadata = obj.metadata or {}

local function said(prefix)
  local parts = {}
  if status.reason ~= nil and status.reason ~= "" then
    table.insert(parts, status.reason)
  end
  if status.message ~= nil and status.message ~= "" then
    table.insert(parts, status.message)
  end
  if #parts == 0 then
    return prefix
  end
  return table.concat(parts, ": ")
end

if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the kubetune operator to pick up the experiment"
  return hs
end

-- A status about an older generation (the spec just changed) is not an answer yet.
if metadata.generation ~= nil and status.observedGeneration ~= nil
    and status.observedGeneration < metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the kubetune operator to observe generation " .. metadata.generation
  return hs
end

if status.phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = said("Succeeded")
elseif status.phase == "Failed" then
  -- Failed trials beyond maxFailedTrials, an Invalid spec, an unreadable history.
  hs.status = "Degraded"
  hs.message = said("Failed")
elseif status.phase == "Running" or status.phase == "Pending" then
  hs.status = "Progressing"
  hs.message = said(status.phase)
else
  hs.status = "Unknown"
  hs.message = "Unknown phase " .. tostring(status.phase)
end
return hs
